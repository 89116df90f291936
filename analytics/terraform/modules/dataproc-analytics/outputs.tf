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
  description = "Dataproc cluster running the job."
  value       = google_dataproc_cluster.analytics.name
}

output "job_id" {
  description = "Dataproc job id of the streaming query."
  value       = google_dataproc_job.analytics.reference[0].job_id
}
