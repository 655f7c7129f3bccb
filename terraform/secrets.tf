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

# --- Further connections' refresh tokens (staff calendars) ---
# The default connection's token is the refresh_token secret above. Every further connection keeps its own
# in "<that secret>-<connection id>", which oauth_callback creates on the connection's first consent (an admin
# adds connections in Directus, without a terraform run). Those secrets do not exist when terraform runs, so
# their grants are made on the project, each conditioned on that name prefix: the functions reach calsync's
# token secrets and no other secret of the project. Secret Manager evaluates resource.name with the project
# number (projects/NUMBER/secrets/ID, and .../versions/N for a version).
data "google_project" "main" {
  project_id = var.project_id
}

locals {
  token_secret_prefix    = "projects/${data.google_project.main.number}/secrets/${local.secrets.refresh_token.name}-"
  token_secret_condition = "resource.name.startsWith(\"${local.token_secret_prefix}\")"
}

# Every function reads every connection's token (booking_hook and calendar_import sync each connection).
resource "google_project_iam_member" "token_reader" {
  for_each = local.functions

  project = var.project_id
  role    = "roles/secretmanager.secretAccessor"
  member  = "serviceAccount:${google_service_account.function[each.key].email}"

  condition {
    title       = "calsync-connection-token-secrets-only"
    description = "Only the refresh token secrets of calsync's further connections"
    expression  = local.token_secret_condition
  }
}

# Only oauth_callback creates a connection's secret and adds, disables and destroys its versions (a consent,
# a replacement, a disconnect): what the token store does, and nothing else (no secret deletion, no IAM).
resource "google_project_iam_custom_role" "token_writer" {
  project     = var.project_id
  role_id     = replace("${var.name_prefix}_token_writer", "-", "_")
  title       = "calsync connection token writer"
  description = "Create a connection's refresh token secret and replace or destroy its versions."
  permissions = [
    "secretmanager.secrets.create",
    "secretmanager.versions.access",
    "secretmanager.versions.add",
    "secretmanager.versions.destroy",
    "secretmanager.versions.disable",
    "secretmanager.versions.list",
  ]
}

resource "google_project_iam_member" "token_writer" {
  project = var.project_id
  role    = google_project_iam_custom_role.token_writer.id
  member  = "serviceAccount:${google_service_account.function["oauth_callback"].email}"

  condition {
    title       = "calsync-connection-token-secrets-only"
    description = "Only the refresh token secrets of calsync's further connections"
    expression  = local.token_secret_condition
  }
}
