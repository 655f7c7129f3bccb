# Sync requests (README "Push notifications and Pub/Sub"): calendar_import's scheduler tick and booking_hook's
# notification receiver publish one message per connection; a push subscription delivers each to the private
# calendar_import with an OIDC token, which runs that one connection's cycle. Pub/Sub's retry policy, backoff
# and dead-letter topic are the retries; calendar_import's max instances x concurrency bounds the cycles
# running at once (variables.tf: inside Google Calendar's quotas).

data "google_project" "main" {
  project_id = var.project_id
}

locals {
  # Google's own agent for Pub/Sub in this project: it signs the push OIDC tokens and moves dead letters.
  pubsub_service_agent = "serviceAccount:service-${data.google_project.main.number}@gcp-sa-pubsub.iam.gserviceaccount.com"
  # Who may publish sync requests: the tick and the notification receiver.
  # the notification receiver, the tick, and a new consent's first sync (run elsewhere: Cloud Run gives an
  # instance no CPU after its answer, so oauth_callback must not run the cycle itself)
  sync_request_publishers = toset(["booking_hook", "calendar_import", "oauth_callback"])
}

resource "google_pubsub_topic" "sync_requests" {
  #checkov:skip=CKV_GCP_83:Messages carry only a connection id, a reason and a time (no personal data, no secrets); a CMEK key ring is a cost most users of this tool do not need.
  project = var.project_id
  name    = "${var.name_prefix}-sync-requests"
  labels  = local.labels

  depends_on = [google_project_service.main]
}

# Where a request goes after max_delivery_attempts: kept a week on the pull subscription below (a topic
# without a subscription would drop them), for an operator to read; the scheduled tick has synced the
# connection meanwhile.
resource "google_pubsub_topic" "sync_requests_dead" {
  #checkov:skip=CKV_GCP_83:Dead letters are the same connection ids, reasons and times as the source topic; Google-managed encryption is adequate.
  project = var.project_id
  name    = "${var.name_prefix}-sync-requests-dead"
  labels  = local.labels

  depends_on = [google_project_service.main]
}

resource "google_pubsub_subscription" "sync_requests_dead" {
  project                    = var.project_id
  name                       = "${var.name_prefix}-sync-requests-dead"
  topic                      = google_pubsub_topic.sync_requests_dead.id
  labels                     = local.labels
  ack_deadline_seconds       = 60
  message_retention_duration = "604800s"

  expiration_policy {
    ttl = "" # never: it is idle until something fails
  }
}

resource "google_pubsub_subscription" "sync_requests" {
  project = var.project_id
  name    = "${var.name_prefix}-sync-requests"
  topic   = google_pubsub_topic.sync_requests.id
  labels  = local.labels

  # Pub/Sub waits this long for calendar_import's answer before it redelivers: a cycle may run to the
  # function's timeout, within Pub/Sub's maximum of 600 s (a redelivery of a running cycle answers busy).
  ack_deadline_seconds = min(600, var.functions.calendar_import.timeout_seconds + 30)
  # A request older than this has been overtaken by scheduled ticks: let it go.
  message_retention_duration = "3600s"

  expiration_policy {
    ttl = "" # never: a quiet week must not delete the subscription
  }

  push_config {
    push_endpoint = google_cloudfunctions2_function.main["calendar_import"].service_config[0].uri

    # Cloud Run checks this token at its ingress (the invoker binding below): calendar_import does not.
    oidc_token {
      service_account_email = google_service_account.pubsub_push.email
      audience              = google_cloudfunctions2_function.main["calendar_import"].service_config[0].uri
    }
  }

  # Only 5xx (and 400 for a malformed message) are retried: busy, covered and unknown connections are
  # acknowledged (calsync.web.sync_requests).
  retry_policy {
    minimum_backoff = "${var.sync_requests.minimum_backoff_seconds}s"
    maximum_backoff = "${var.sync_requests.maximum_backoff_seconds}s"
  }

  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.sync_requests_dead.id
    max_delivery_attempts = var.sync_requests.max_delivery_attempts
  }

  depends_on = [
    google_cloud_run_v2_service_iam_member.calendar_import_pubsub_push,
    google_service_account_iam_member.pubsub_push_token_creator,
    google_pubsub_topic_iam_member.dead_letter_publisher,
  ]
}

# The push subscription's identity: it may only invoke calendar_import (service_accounts.tf).
resource "google_service_account" "pubsub_push" {
  project      = var.project_id
  account_id   = "${var.name_prefix}-pubsub-push"
  display_name = "calsync Pub/Sub push (invokes calendar_import)"

  depends_on = [google_project_service.main]
}

# The Pub/Sub service agent mints the push subscription's OIDC tokens as that account, and only that one.
resource "google_service_account_iam_member" "pubsub_push_token_creator" {
  service_account_id = google_service_account.pubsub_push.name
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = local.pubsub_service_agent
}

# Dead-lettering: the service agent publishes to the dead-letter topic and acknowledges on the source
# subscription (Pub/Sub's documented pair of grants), each on that one resource.
resource "google_pubsub_topic_iam_member" "dead_letter_publisher" {
  project = var.project_id
  topic   = google_pubsub_topic.sync_requests_dead.name
  role    = "roles/pubsub.publisher"
  member  = local.pubsub_service_agent
}

resource "google_pubsub_subscription_iam_member" "dead_letter_subscriber" {
  project      = var.project_id
  subscription = google_pubsub_subscription.sync_requests.name
  role         = "roles/pubsub.subscriber"
  member       = local.pubsub_service_agent
}

# The tick (calendar_import) and the notification receiver (booking_hook) publish, on this topic only.
resource "google_pubsub_topic_iam_member" "sync_request_publisher" {
  for_each = local.sync_request_publishers

  project = var.project_id
  topic   = google_pubsub_topic.sync_requests.name
  role    = "roles/pubsub.publisher"
  member  = "serviceAccount:${google_service_account.function[each.key].email}"
}
