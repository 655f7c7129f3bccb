locals {
  labels = merge(var.labels, { app = "calsync" })

  # The three functions. The key is the Python entry point (functions/<key>/main.py defines <key>); the
  # deployed name uses hyphens because a 2nd gen function is a Cloud Run service and those allow no underscores.
  functions = {
    booking_hook = {
      name        = "${var.name_prefix}-booking-hook"
      description = "Directus Flow webhook on bookings create/update/delete -> Google Calendar."
    }
    calendar_import = {
      name        = "${var.name_prefix}-calendar-import"
      description = "One sync cycle (Google -> Directus, plus repairs), called by Cloud Scheduler."
    }
    oauth_callback = {
      name        = "${var.name_prefix}-oauth-callback"
      description = "An admin connects the Google account (/start, /callback, /status, /disconnect)."
    }
  }

  # A 2nd gen function also answers at its stable cloudfunctions.net address; unlike the run.app URI it is
  # known before the function exists, which the redirect URI (an env var of that same function) needs.
  function_urls = {
    for key, function in local.functions :
    key => "https://${var.region}-${var.project_id}.cloudfunctions.net/${function.name}"
  }
  google_redirect_uri = "${local.function_urls.oauth_callback}/callback"

  store       = var.firestore_database == "(default)" ? "firestore" : "firestore://${var.firestore_database}"
  token_store = "secretmanager://projects/${var.project_id}/secrets/${google_secret_manager_secret.main["refresh_token"].secret_id}"
}
