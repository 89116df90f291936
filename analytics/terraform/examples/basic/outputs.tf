output "analytics_client_cidrs" {
  description = "For CDK: CLOUDSHOP_ANALYTICS_CLIENT_CIDRS, the sources MSK's public listener admits (Cloud NAT's addresses)."
  value       = join(",", [for address in module.analytics.nat_ip_addresses : "${address}/32"])
}

output "copy_kafka_credentials" {
  description = "Copies the SCRAM credentials from AWS Secrets Manager into the two Secret Manager secrets (run with both clouds' credentials)."
  value = join("\n", [
    for key, secret_id in module.analytics.kafka_secret_ids :
    "aws secretsmanager get-secret-value --secret-id '${var.msk_scram_secret_name == "" ? "<MskScramSecretName>" : var.msk_scram_secret_name}' --query SecretString --output text | python3 -c 'import json,sys; sys.stdout.write(json.load(sys.stdin)[\"${key}\"])' | gcloud secrets versions add ${secret_id} --project ${var.project_id} --data-file=-"
  ])
}

output "bigquery_table" {
  description = "Where the windows land in BigQuery."
  value       = module.analytics.bigquery_table
}

output "service_account_email" {
  description = "The job's service account."
  value       = module.analytics.service_account_email
}

output "job_id" {
  description = "Dataproc job id of the streaming query (null until msk_scram_bootstrap_servers is set)."
  value       = module.analytics.job_id
}
