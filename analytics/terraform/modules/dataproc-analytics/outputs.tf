output "service_account_email" {
  description = "The job's service account."
  value       = google_service_account.analytics.email
}

output "bucket" {
  description = "Bucket of the code, the checkpoints and the Parquet results."
  value       = google_storage_bucket.analytics.name
}

output "checkpoint_uri" {
  description = "Checkpoint location of the streaming query (delete it only to reprocess from the topic's start)."
  value       = local.checkpoint_uri
}

output "parquet_uri" {
  description = "Parquet data set of the window results."
  value       = local.parquet_uri
}

output "bigquery_table" {
  description = "BigQuery table of the window results, project.dataset.table."
  value       = local.bigquery_table
}

output "cluster_name" {
  description = "Dataproc cluster running the job (null until kafka_bootstrap_servers is set)."
  value       = try(google_dataproc_cluster.analytics[0].name, null)
}

output "job_id" {
  description = "Dataproc job id of the streaming query (null until kafka_bootstrap_servers is set)."
  value       = try(google_dataproc_job.analytics[0].reference[0].job_id, null)
}

output "nat_ip_addresses" {
  description = "Cloud NAT's static addresses: the only sources MSK's public listener admits (CDK: CLOUDSHOP_ANALYTICS_CLIENT_CIDRS)."
  value       = google_compute_address.nat[*].address
}

output "kafka_secret_ids" {
  description = "Ids of the Secret Manager secrets the Kafka username and password are added to (the ids, never the values)."
  value       = { for key, secret in google_secret_manager_secret.kafka : key => secret.secret_id }
}

output "subnetwork" {
  description = "Self link of the cluster's subnet."
  value       = google_compute_subnetwork.analytics.self_link
}
