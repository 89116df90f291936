variable "project_id" {
  description = "GCP project."
  type        = string
}

variable "region" {
  description = "GCP region."
  type        = string
  default     = "europe-west1"
}

variable "environment" {
  description = "Environment label."
  type        = string
  default     = "dev"
}

variable "package_path" {
  description = "Path of the zipped analytics package, relative to this directory."
  type        = string
  default     = "../../../../dist/analytics.zip"
}

variable "deletion_protection" {
  description = "Protect the BigQuery table and keep the bucket's objects on destroy; set false and apply before `terraform destroy`."
  type        = bool
  default     = true
}

# --- from the AWS side: the CDK outputs of the Streaming stack with the same names in PascalCase ------

variable "msk_scram_bootstrap_servers" {
  description = "CDK output MskScramBootstrapServers: MSK's public SASL/SCRAM brokers (port 9196). Empty on the first apply."
  type        = string
  default     = ""
}

variable "msk_scram_secret_name" {
  description = "CDK output MskScramSecretName: the AWS Secrets Manager secret (AmazonMSK_...) whose username and password the job's two secrets receive."
  type        = string
  default     = ""
}
