# The analytics module in one project, reading Kafka credentials from two existing secrets.
#
#   python -m analytics.package dist/analytics.zip      # from the repository root
#   cp terraform.tfvars.example terraform.tfvars        # and fill it in
#   terraform init && terraform apply

terraform {
  required_version = ">= 1.5"

  required_providers {
    google = {
      source  = "hashicorp/google"
      version = ">= 6.0, < 8.0"
    }
  }
}

provider "google" {
  project = var.project_id
  region  = var.region
}

module "analytics" {
  source = "../../modules/dataproc-analytics"

  project_id               = var.project_id
  region                   = var.region
  package_path             = var.package_path
  kafka_bootstrap_servers  = var.kafka_bootstrap_servers
  kafka_username_secret_id = var.kafka_username_secret_id
  kafka_password_secret_id = var.kafka_password_secret_id
  worker_count             = 2
  labels                   = { env = var.environment }
}
