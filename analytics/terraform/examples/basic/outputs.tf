output "bigquery_table" {
  description = "Where the windows land in BigQuery."
  value       = module.analytics.bigquery_table
}

output "service_account_email" {
  description = "The job's service account."
  value       = module.analytics.service_account_email
}

output "job_id" {
  description = "Dataproc job id of the streaming query."
  value       = module.analytics.job_id
}
