# Streaming analytics on Dataproc: a 2.2 cluster running analytics/job.py from the `orders` topic to
# the `analytics-results` topic, Parquet on GCS and BigQuery. Kafka is MSK on AWS, reached over TLS
# with SASL/SCRAM on its public endpoint, through this module's Cloud NAT (network.tf).

locals {
  bigquery_location = coalesce(var.bigquery_location, var.region)
  main_path         = coalesce(var.main_path, "${path.module}/../../../job.py")
  labels            = merge({ app = "cloudshop", component = "analytics" }, var.labels)
  # The cluster and its job come once the brokers are known: a first apply without them makes the
  # network, the NAT addresses and the secrets, which the AWS side needs first.
  link_ready = trimspace(var.kafka_bootstrap_servers) != ""

  # Resource names of the secret versions: the job reads the values, Terraform never does.
  secret_versions = {
    for key, secret in google_secret_manager_secret.kafka :
    key => "projects/${var.project_id}/secrets/${secret.secret_id}/versions/${var.kafka_secret_version}"
  }

  checkpoint_uri = "gs://${google_storage_bucket.analytics.name}/checkpoints/order_windows"
  parquet_uri    = "gs://${google_storage_bucket.analytics.name}/results/order_windows"
  bigquery_table = "${var.project_id}.${google_bigquery_dataset.analytics.dataset_id}.${google_bigquery_table.windows.table_id}"

  job_args = concat(
    [
      "--source", "kafka",
      "--kafka-bootstrap-servers", var.kafka_bootstrap_servers,
      "--orders-topic", var.orders_topic,
      "--results-topic", var.results_topic,
      "--kafka-security-protocol", var.kafka_security_protocol,
      "--kafka-sasl-mechanism", var.kafka_sasl_mechanism,
      "--kafka-username-secret", local.secret_versions.username,
      "--kafka-password-secret", local.secret_versions.password,
      "--watermark", var.watermark,
      "--trigger-interval", var.trigger_interval,
      "--checkpoint-location", local.checkpoint_uri,
    ],
    flatten([for sink in var.sinks : ["--sink", sink]]),
    contains(var.sinks, "parquet") ? ["--parquet-path", local.parquet_uri] : [],
    contains(var.sinks, "bigquery") ? ["--bigquery-table", local.bigquery_table] : [],
  )
}

# --- code, checkpoints, Parquet results, Dataproc staging ----------------------------------------

resource "google_storage_bucket" "analytics" {
  project                     = var.project_id
  name                        = "${var.project_id}-${var.name}"
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = !var.deletion_protection
  labels                      = local.labels

  versioning {
    enabled = false
  }
}

resource "google_storage_bucket_object" "main" {
  bucket = google_storage_bucket.analytics.name
  name   = "code/job-${filemd5(local.main_path)}.py"
  source = local.main_path
}

resource "google_storage_bucket_object" "package" {
  bucket = google_storage_bucket.analytics.name
  name   = "code/analytics-${filemd5(var.package_path)}.zip"
  source = var.package_path
}

# --- identity: one service account, only the roles the job needs ---------------------------------

resource "google_service_account" "analytics" {
  project      = var.project_id
  account_id   = var.name
  display_name = "cloudshop streaming analytics (Dataproc)"
}

locals {
  sa_member = "serviceAccount:${google_service_account.analytics.email}"
  # Project-level roles: the Dataproc VM role, running BigQuery jobs, writing logs and metrics.
  # Data access is granted on the bucket, the dataset and the two secrets only.
  project_roles = toset([
    "roles/dataproc.worker",
    "roles/bigquery.jobUser",
    "roles/logging.logWriter",
    "roles/monitoring.metricWriter",
  ])
}

resource "google_project_iam_member" "analytics" {
  for_each = local.project_roles
  project  = var.project_id
  role     = each.value
  member   = local.sa_member
}

resource "google_storage_bucket_iam_member" "analytics" {
  bucket = google_storage_bucket.analytics.name
  role   = "roles/storage.objectAdmin"
  member = local.sa_member
}

resource "google_bigquery_dataset_iam_member" "analytics" {
  project    = var.project_id
  dataset_id = google_bigquery_dataset.analytics.dataset_id
  role       = "roles/bigquery.dataEditor"
  member     = local.sa_member
}

# The SCRAM credentials of the AWS secret `AmazonMSK_<prefix>analytics` (CDK output MskScramSecretName):
# Terraform makes the two secrets; their values are added out of band (analytics/README.md), so no
# credential ever passes through Terraform's state.
resource "google_secret_manager_secret" "kafka" {
  for_each  = toset(["username", "password"])
  project   = var.project_id
  secret_id = "${var.name}-kafka-${each.key}"
  labels    = local.labels

  replication {
    auto {}
  }
}

resource "google_secret_manager_secret_iam_member" "kafka" {
  for_each  = google_secret_manager_secret.kafka
  project   = var.project_id
  secret_id = each.value.secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = local.sa_member
}

# --- BigQuery -------------------------------------------------------------------------------------

resource "google_bigquery_dataset" "analytics" {
  project     = var.project_id
  dataset_id  = var.bigquery_dataset_id
  location    = local.bigquery_location
  description = "cloudshop sales analytics: 1-minute windows of paid orders"
  labels      = local.labels
}

resource "google_bigquery_table" "windows" {
  project             = var.project_id
  dataset_id          = google_bigquery_dataset.analytics.dataset_id
  table_id            = var.bigquery_table_id
  description         = "One row per window and write; deduplicate on window_start, preferring final = true"
  deletion_protection = var.deletion_protection
  labels              = local.labels
  schema              = file("${path.module}/schema/order_windows.json")

  time_partitioning {
    type  = "DAY"
    field = "window_start"
  }
}

# --- Dataproc ------------------------------------------------------------------------------------

resource "google_dataproc_cluster" "analytics" {
  count   = local.link_ready ? 1 : 0
  project = var.project_id
  name    = var.name
  region  = var.region
  labels  = local.labels

  cluster_config {
    staging_bucket = google_storage_bucket.analytics.name
    temp_bucket    = google_storage_bucket.analytics.name

    gce_cluster_config {
      service_account        = google_service_account.analytics.email
      service_account_scopes = ["cloud-platform"]
      subnetwork             = google_compute_subnetwork.analytics.self_link
      # No external IPs: Google APIs through Private Google Access, the rest through Cloud NAT.
      internal_ip_only = true

      shielded_instance_config {
        enable_secure_boot          = true
        enable_vtpm                 = true
        enable_integrity_monitoring = true
      }
    }

    master_config {
      num_instances = 1
      machine_type  = var.master_machine_type
      disk_config {
        boot_disk_size_gb = 100
      }
    }

    worker_config {
      num_instances = var.worker_count
      machine_type  = var.worker_machine_type
      disk_config {
        boot_disk_size_gb = 100
      }
    }

    software_config {
      image_version = var.image_version
      override_properties = {
        # The job reads the Kafka credentials from Secret Manager with this client.
        "dataproc:pip.packages"            = "google-cloud-secret-manager==2.20.2"
        "spark:spark.sql.session.timeZone" = "UTC"
      }
    }
  }

  depends_on = [
    google_project_iam_member.analytics,
    google_storage_bucket_iam_member.analytics,
    google_compute_router_nat.analytics,
    google_compute_firewall.internal,
  ]
}

resource "google_dataproc_job" "analytics" {
  count        = local.link_ready ? 1 : 0
  project      = var.project_id
  region       = var.region
  force_delete = true
  labels       = local.labels

  placement {
    cluster_name = google_dataproc_cluster.analytics[0].name
  }

  pyspark_config {
    main_python_file_uri = "gs://${google_storage_bucket.analytics.name}/${google_storage_bucket_object.main.name}"
    python_file_uris     = ["gs://${google_storage_bucket.analytics.name}/${google_storage_bucket_object.package.name}"]
    args                 = local.job_args
    properties = {
      # The BigQuery connector is pre-installed on 2.1+ images; the Kafka one comes from Maven Central.
      "spark.jars.packages"                          = var.spark_kafka_package
      "spark.sql.streaming.stopGracefullyOnShutdown" = "true"
    }
  }

  # A streaming job: restart it when it fails, within bounds.
  scheduling {
    max_failures_per_hour = 5
    max_failures_total    = 20
  }

  depends_on = [
    google_bigquery_dataset_iam_member.analytics,
    google_secret_manager_secret_iam_member.kafka,
    google_compute_firewall.egress_kafka,
    google_compute_firewall.egress_https,
  ]
}
