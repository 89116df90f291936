# The cluster's network: one subnet, VMs without external IPs, Google APIs through Private Google
# Access, and the one way out to the internet through Cloud NAT on reserved addresses. Those addresses
# (output `nat_ip_addresses`) are the only sources MSK's public SASL/SCRAM listener admits (CDK:
# CLOUDSHOP_ANALYTICS_CLIENT_CIDRS). Egress is denied but for the Kafka brokers' port, HTTPS (Maven
# Central for the Kafka connector, Google APIs) and the subnet itself.

resource "google_compute_network" "analytics" {
  project                 = var.project_id
  name                    = var.name
  auto_create_subnetworks = false
  routing_mode            = "REGIONAL"
}

resource "google_compute_subnetwork" "analytics" {
  project                  = var.project_id
  name                     = var.name
  region                   = var.region
  network                  = google_compute_network.analytics.id
  ip_cidr_range            = var.subnet_cidr
  private_ip_google_access = true

  log_config {
    aggregation_interval = "INTERVAL_5_MIN"
    flow_sampling        = 0.5
    metadata             = "INCLUDE_ALL_METADATA"
  }
}

resource "google_compute_router" "analytics" {
  project = var.project_id
  name    = var.name
  region  = var.region
  network = google_compute_network.analytics.id
}

# Static, so the AWS side can admit exactly these sources.
resource "google_compute_address" "nat" {
  count        = var.nat_ip_count
  project      = var.project_id
  name         = "${var.name}-nat-${count.index}"
  region       = var.region
  address_type = "EXTERNAL"
  labels       = local.labels
}

resource "google_compute_router_nat" "analytics" {
  project                            = var.project_id
  name                               = var.name
  region                             = var.region
  router                             = google_compute_router.analytics.name
  nat_ip_allocate_option             = "MANUAL_ONLY"
  nat_ips                            = google_compute_address.nat[*].self_link
  source_subnetwork_ip_ranges_to_nat = "LIST_OF_SUBNETWORKS"

  subnetwork {
    name                    = google_compute_subnetwork.analytics.id
    source_ip_ranges_to_nat = ["ALL_IP_RANGES"]
  }

  log_config {
    enable = true
    filter = "ERRORS_ONLY"
  }
}

# --- firewall: Dataproc nodes talk to each other; out only to Kafka, HTTPS and the subnet -----------

resource "google_compute_firewall" "internal" {
  project       = var.project_id
  name          = "${var.name}-allow-internal"
  network       = google_compute_network.analytics.name
  direction     = "INGRESS"
  priority      = 1000
  source_ranges = [var.subnet_cidr]
  description   = "Dataproc master and workers reach each other (YARN, HDFS, Spark)."

  allow {
    protocol = "tcp"
  }
  allow {
    protocol = "udp"
  }
  allow {
    protocol = "icmp"
  }
}

resource "google_compute_firewall" "egress_internal" {
  project            = var.project_id
  name               = "${var.name}-egress-internal"
  network            = google_compute_network.analytics.name
  direction          = "EGRESS"
  priority           = 1000
  destination_ranges = [var.subnet_cidr]
  description        = "Traffic inside the subnet."

  allow {
    protocol = "all"
  }
}

resource "google_compute_firewall" "egress_kafka" {
  project            = var.project_id
  name               = "${var.name}-egress-kafka"
  network            = google_compute_network.analytics.name
  direction          = "EGRESS"
  priority           = 1000
  destination_ranges = var.kafka_broker_cidrs
  description        = "MSK's public SASL/SCRAM listener (TLS), through Cloud NAT."

  allow {
    protocol = "tcp"
    ports    = [tostring(var.kafka_port)]
  }
}

resource "google_compute_firewall" "egress_https" {
  project            = var.project_id
  name               = "${var.name}-egress-https"
  network            = google_compute_network.analytics.name
  direction          = "EGRESS"
  priority           = 1000
  destination_ranges = ["0.0.0.0/0"]
  description        = "Google APIs (Private Google Access) and Maven Central (the Spark Kafka connector)."

  allow {
    protocol = "tcp"
    ports    = ["443"]
  }
}

resource "google_compute_firewall" "deny_egress" {
  project            = var.project_id
  name               = "${var.name}-deny-egress"
  network            = google_compute_network.analytics.name
  direction          = "EGRESS"
  priority           = 65534
  destination_ranges = ["0.0.0.0/0"]
  description        = "Everything else leaving the cluster."

  deny {
    protocol = "all"
  }
}
