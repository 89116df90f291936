# The analytics module in one project, linked to the cloudshop MSK cluster on AWS. Two applies, as the
# two clouds need each other's values (analytics/README.md, "The link between the clouds"):
#
#   python -m analytics.package dist/analytics.zip      # from the repository root
#   cp terraform.tfvars.example terraform.tfvars        # project and region
#   terraform init && terraform apply                   # 1: network, NAT addresses, secrets, bucket, dataset
#   # AWS: cdk deploy with CLOUDSHOP_ANALYTICS_CLIENT_CIDRS = output analytics_client_cidrs;
#   #      then put the SCRAM credentials into the two secrets (output copy_kafka_credentials)
#   terraform apply -var msk_scram_bootstrap_servers=... -var msk_scram_secret_name=...   # 2: cluster and job

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

  project_id              = var.project_id
  region                  = var.region
  package_path            = var.package_path
  kafka_bootstrap_servers = var.msk_scram_bootstrap_servers
  deletion_protection     = var.deletion_protection
  worker_count            = 2
  labels                  = { env = var.environment }
}
