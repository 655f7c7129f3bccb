# One runtime identity per function: a leaked or misbehaving function can do only what its own job needs.
resource "google_service_account" "function" {
  for_each = local.functions

  project      = var.project_id
  account_id   = replace("${var.name_prefix}-${each.key}", "_", "-")
  display_name = "calsync ${each.key} (runtime)"
  description  = "Runtime identity of the ${local.functions[each.key].name} Cloud Function."

  depends_on = [google_project_service.main]
}

# Cloud Scheduler's identity: it only signs the OIDC token that invokes calendar_import.
resource "google_service_account" "scheduler" {
  project      = var.project_id
  account_id   = "${var.name_prefix}-scheduler"
  display_name = "calsync scheduler (invokes calendar_import)"

  depends_on = [google_project_service.main]
}

# The identity Cloud Build uses to build the functions' images (instead of a broad default account).
resource "google_service_account" "builder" {
  project      = var.project_id
  account_id   = "${var.name_prefix}-builder"
  display_name = "calsync function builder"

  depends_on = [google_project_service.main]
}

# Firestore (the SyncStore) grants roles only at project level; datastore.user is data read/write, no admin,
# and the IAM condition narrows it to calsync's own database (Firestore evaluates resource.name per database),
# so another database in the project stays out of the functions' reach.
resource "google_project_iam_member" "function_firestore" {
  for_each = local.functions

  project = var.project_id
  role    = "roles/datastore.user"
  member  = "serviceAccount:${google_service_account.function[each.key].email}"

  condition {
    title       = "calsync-firestore-database-only"
    description = "Only the calsync Firestore database"
    expression  = "resource.name == \"projects/${var.project_id}/databases/${google_firestore_database.main.name}\""
  }
}

resource "google_project_iam_member" "builder_logs" {
  project = var.project_id
  role    = "roles/logging.logWriter"
  member  = "serviceAccount:${google_service_account.builder.email}"
}

# The build fetches the staged source from the buckets Cloud Functions manages itself (gcf-v2-sources-*,
# gcf-v2-uploads-*), whose names Terraform does not control, hence a project-level grant (what Google
# documents), conditioned on those bucket names: no other bucket's objects in the project are readable.
# resource.name is projects/_/buckets/BUCKET for bucket-level checks (list) and .../objects/NAME for reads.
resource "google_project_iam_member" "builder_sources" {
  project = var.project_id
  role    = "roles/storage.objectViewer"
  member  = "serviceAccount:${google_service_account.builder.email}"

  condition {
    title       = "calsync-gcf-source-buckets-only"
    description = "Only the buckets Cloud Functions stages function sources in"
    expression  = "resource.name.startsWith(\"projects/_/buckets/gcf-v2-sources-\") || resource.name.startsWith(\"projects/_/buckets/gcf-v2-uploads-\")"
  }
}

# Our own source bucket, granted on the bucket itself (not the project).
resource "google_storage_bucket_iam_member" "builder_sources" {
  bucket = google_storage_bucket.sources.name
  role   = "roles/storage.objectViewer"
  member = "serviceAccount:${google_service_account.builder.email}"
}

resource "google_artifact_registry_repository_iam_member" "builder" {
  project    = var.project_id
  location   = google_artifact_registry_repository.functions.location
  repository = google_artifact_registry_repository.functions.name
  role       = "roles/artifactregistry.writer"
  member     = "serviceAccount:${google_service_account.builder.email}"
}

# --- Who may invoke which function (a 2nd gen function is invoked through its Cloud Run service) ---

# booking_hook is public because Directus calls it without Google credentials. It authenticates in code:
# every request must carry `Authorization: Bearer WEBHOOK_SECRET` (constant-time compare) or gets 401.
resource "google_cloud_run_v2_service_iam_member" "booking_hook_public" {
  project  = var.project_id
  location = var.region
  name     = google_cloudfunctions2_function.main["booking_hook"].name
  role     = "roles/run.invoker"
  member   = "allUsers"
}

# oauth_callback is public because an admin's browser opens /start and Google redirects the browser to
# /callback. It authenticates in code: /start, /status and /disconnect need ?key=CONNECT_KEY, and /callback
# accepts only a single-use, expiring OAuth state it issued itself (PKCE verifier kept server-side).
resource "google_cloud_run_v2_service_iam_member" "oauth_callback_public" {
  project  = var.project_id
  location = var.region
  name     = google_cloudfunctions2_function.main["oauth_callback"].name
  role     = "roles/run.invoker"
  member   = "allUsers"
}

# calendar_import is private: only the scheduler's service account may invoke it, on this one service.
resource "google_cloud_run_v2_service_iam_member" "calendar_import_scheduler" {
  project  = var.project_id
  location = var.region
  name     = google_cloudfunctions2_function.main["calendar_import"].name
  role     = "roles/run.invoker"
  member   = "serviceAccount:${google_service_account.scheduler.email}"
}

# ... and the push subscription of sync requests (pubsub.tf), whose OIDC token Cloud Run checks.
resource "google_cloud_run_v2_service_iam_member" "calendar_import_pubsub_push" {
  project  = var.project_id
  location = var.region
  name     = google_cloudfunctions2_function.main["calendar_import"].name
  role     = "roles/run.invoker"
  member   = "serviceAccount:${google_service_account.pubsub_push.email}"
}
