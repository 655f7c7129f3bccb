# Cloud Scheduler -> private calendar_import: the job signs an OIDC token as its own service account, with
# the function's URI as audience; Cloud Run checks it against the invoker binding on that one service.
# The tick stays a call of calendar_import rather than a Pub/Sub target: only calendar_import knows the
# connections (in Directus), and with PUBSUB_TOPIC it publishes one sync request per connection (pubsub.tf);
# Scheduler's own Pub/Sub target could only publish one fixed message.
resource "google_cloud_scheduler_job" "import" {
  project     = var.project_id
  region      = var.region
  name        = "${var.name_prefix}-import"
  description = "Runs one calsync cycle (Google -> Directus, outbox, repairs)."
  schedule    = var.schedule
  time_zone   = var.timezone
  # Let a cycle run to its own timeout before Scheduler gives up on the call.
  attempt_deadline = "${var.functions.calendar_import.timeout_seconds + 60}s"

  # The next tick is the retry: a cycle resumes from its saved cursors and outbox.
  retry_config {
    retry_count = 0
  }

  http_target {
    http_method = "POST"
    uri         = google_cloudfunctions2_function.main["calendar_import"].service_config[0].uri
    headers = {
      "Content-Type" = "application/json"
    }
    body = base64encode("{}")

    oidc_token {
      service_account_email = google_service_account.scheduler.email
      audience              = google_cloudfunctions2_function.main["calendar_import"].service_config[0].uri
    }
  }

  depends_on = [google_cloud_run_v2_service_iam_member.calendar_import_scheduler]
}
