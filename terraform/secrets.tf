# Secret containers only: their values are added out of band (`gcloud secrets versions add`, see
# docs/DEPLOY.md) so they never pass through Terraform state or a tfvars file.
locals {
  secrets = {
    google_client_secret = { name = "${var.name_prefix}-google-client-secret", env = "GOOGLE_CLIENT_SECRET" }
    webhook_secret       = { name = "${var.name_prefix}-webhook-secret", env = "WEBHOOK_SECRET" }
    connect_key          = { name = "${var.name_prefix}-connect-key", env = "CONNECT_KEY" }
    directus_token       = { name = "${var.name_prefix}-directus-token", env = "DIRECTUS_TOKEN" }
    # Written by oauth_callback at runtime through the Secret Manager API (TOKEN_STORE); not an env variable.
    refresh_token = { name = "${var.name_prefix}-refresh-token", env = null }
  }

  # Which function gets which secret as an environment variable (latest version, read at instance start).
  secret_env = {
    booking_hook    = ["webhook_secret", "directus_token", "google_client_secret"]
    calendar_import = ["directus_token", "google_client_secret"]
    oauth_callback  = ["connect_key", "google_client_secret", "directus_token"] # directus: shows the connection status there
  }

  # Read access, granted on each secret (never on the project): the env secrets above plus the refresh token.
  secret_readers = {
    for pair in flatten([
      for function, secrets in local.secret_env : [
        for secret in concat(secrets, ["refresh_token"]) : { function = function, secret = secret }
      ]
    ]) : "${pair.secret}/${pair.function}" => pair
  }
}

resource "google_secret_manager_secret" "main" {
  for_each = local.secrets

  project   = var.project_id
  secret_id = each.value.name

  replication {
    auto {}
  }

  depends_on = [google_project_service.main]
}

resource "google_secret_manager_secret_iam_member" "reader" {
  for_each = local.secret_readers

  project   = var.project_id
  secret_id = google_secret_manager_secret.main[each.value.secret].secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${google_service_account.function[each.value.function].email}"
}

# Only oauth_callback may add a version to the refresh-token secret (a new consent) and disable or destroy
# old ones (disconnect, replacement); booking_hook and calendar_import may only read it.
resource "google_secret_manager_secret_iam_member" "token_writer" {
  for_each = toset([
    "roles/secretmanager.secretVersionAdder",
    "roles/secretmanager.secretVersionManager",
  ])

  project   = var.project_id
  secret_id = google_secret_manager_secret.main["refresh_token"].secret_id
  role      = each.value
  member    = "serviceAccount:${google_service_account.function["oauth_callback"].email}"
}
