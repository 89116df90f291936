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

variable "kafka_bootstrap_servers" {
  description = "Kafka brokers, host:port,host:port."
  type        = string
}

variable "kafka_username_secret_id" {
  description = "Secret Manager secret id of the Kafka SASL username."
  type        = string
}

variable "kafka_password_secret_id" {
  description = "Secret Manager secret id of the Kafka SASL password."
  type        = string
}
