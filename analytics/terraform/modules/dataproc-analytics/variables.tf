# Inputs of the analytics module. Nothing here holds a secret: the module makes the two Secret Manager
# secrets of the Kafka credentials, their values are added out of band, and the job reads them at
# start-up with its own service account.

variable "project_id" {
  description = "GCP project that hosts the cluster, the bucket and the BigQuery dataset."
  type        = string
}

variable "region" {
  description = "Region of the Dataproc cluster and the bucket (e.g. europe-west1)."
  type        = string
}

variable "name" {
  description = "Name of the cluster and the service account, prefix of the other resources."
  type        = string
  default     = "cloudshop-analytics"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]$", var.name))
    error_message = "name must be 6-30 characters of lower-case letters, digits and hyphens (a service account id)."
  }
}

variable "labels" {
  description = "Labels on every resource that takes them."
  type        = map(string)
  default     = {}
}

# --- the job ------------------------------------------------------------------------------------

variable "package_path" {
  description = "Local path of the zipped `analytics` package (`python -m analytics.package dist/analytics.zip`)."
  type        = string
}

variable "main_path" {
  description = "Local path of the job's main file; defaults to analytics/job.py of this repository."
  type        = string
  default     = null
}

variable "watermark" {
  description = "How late an order event may arrive and still count (Spark interval)."
  type        = string
  default     = "2 minutes"
}

variable "trigger_interval" {
  description = "Micro-batch interval of the streaming query."
  type        = string
  default     = "10 seconds"
}

variable "sinks" {
  description = "Sinks of the job: any of kafka, parquet, bigquery."
  type        = list(string)
  default     = ["kafka", "parquet", "bigquery"]

  validation {
    condition     = length(var.sinks) > 0 && alltrue([for sink in var.sinks : contains(["kafka", "parquet", "bigquery"], sink)])
    error_message = "sinks must be a non-empty list of kafka, parquet and bigquery."
  }
}

variable "spark_kafka_package" {
  description = "Maven coordinates of the Spark Kafka connector matching the image's Spark (2.2: Spark 3.5, Scala 2.12)."
  type        = string
  default     = "org.apache.spark:spark-sql-kafka-0-10_2.12:3.5.1"
}

# --- Kafka --------------------------------------------------------------------------------------

variable "kafka_bootstrap_servers" {
  description = "Comma-separated host:port list of MSK's public SASL/SCRAM brokers (CDK output MskScramBootstrapServers). Empty: no cluster or job yet (first apply)."
  type        = string
  default     = ""

  validation {
    condition     = trimspace(var.kafka_bootstrap_servers) == "" || alltrue([for broker in split(",", var.kafka_bootstrap_servers) : can(regex("^[A-Za-z0-9.-]+:[0-9]+$", trimspace(broker)))])
    error_message = "kafka_bootstrap_servers must be empty or a comma-separated list of host:port."
  }
}

variable "kafka_port" {
  description = "Port of MSK's public SASL/SCRAM listener, the only Kafka port the firewall opens."
  type        = number
  default     = 9196
}

variable "kafka_broker_cidrs" {
  description = "Destinations of the Kafka egress rule. MSK assigns the brokers' public addresses when public access is turned on; narrow this to them once known."
  type        = list(string)
  default     = ["0.0.0.0/0"]
}

variable "orders_topic" {
  description = "Topic of the order events."
  type        = string
  default     = "orders"
}

variable "results_topic" {
  description = "Topic the window results are published to."
  type        = string
  default     = "analytics-results"
}

variable "kafka_security_protocol" {
  description = "Kafka client security protocol."
  type        = string
  default     = "SASL_SSL"

  validation {
    condition     = contains(["SASL_SSL", "SASL_PLAINTEXT", "SSL", "PLAINTEXT"], var.kafka_security_protocol)
    error_message = "kafka_security_protocol must be SASL_SSL, SASL_PLAINTEXT, SSL or PLAINTEXT."
  }
}

variable "kafka_sasl_mechanism" {
  description = "SASL mechanism (MSK: SCRAM-SHA-512)."
  type        = string
  default     = "SCRAM-SHA-512"

  validation {
    condition     = contains(["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"], var.kafka_sasl_mechanism)
    error_message = "kafka_sasl_mechanism must be PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512."
  }
}

variable "kafka_secret_version" {
  description = "Version of the two secrets the job reads at start-up."
  type        = string
  default     = "latest"
}

# --- BigQuery -----------------------------------------------------------------------------------

variable "bigquery_dataset_id" {
  description = "Dataset of the window results."
  type        = string
  default     = "cloudshop_analytics"
}

variable "bigquery_table_id" {
  description = "Table of the window results (one row per window and write)."
  type        = string
  default     = "order_windows"
}

variable "bigquery_location" {
  description = "Location of the dataset; defaults to region."
  type        = string
  default     = null
}

variable "deletion_protection" {
  description = "Protect the BigQuery table and keep the bucket's objects on destroy (set false and apply before `terraform destroy`)."
  type        = bool
  default     = true
}

# --- cluster ------------------------------------------------------------------------------------

variable "image_version" {
  description = "Dataproc image: 2.2 runs Spark 3.5 on Debian 12."
  type        = string
  default     = "2.2-debian12"
}

variable "master_machine_type" {
  description = "Machine type of the master."
  type        = string
  default     = "n2-standard-4"
}

variable "worker_machine_type" {
  description = "Machine type of the primary workers."
  type        = string
  default     = "n2-standard-4"
}

variable "worker_count" {
  description = "Number of primary workers."
  type        = number
  default     = 2
}

# --- network ------------------------------------------------------------------------------------

variable "subnet_cidr" {
  description = "Range of the cluster's subnet."
  type        = string
  default     = "10.60.0.0/24"
}

variable "nat_ip_count" {
  description = "Static external addresses of Cloud NAT: the sources the MSK security group admits (one serves a small cluster)."
  type        = number
  default     = 1

  validation {
    condition     = var.nat_ip_count >= 1
    error_message = "nat_ip_count must be at least 1."
  }
}
