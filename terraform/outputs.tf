output "booking_hook_url" {
  description = "Directus Flow webhook target (give it to `calsync directus setup`)."
  value       = google_cloudfunctions2_function.main["booking_hook"].url
}

output "calendar_import_url" {
  description = "The sync cycle (private: only the scheduler's and the Pub/Sub push subscription's service accounts may invoke it)."
  value       = google_cloudfunctions2_function.main["calendar_import"].url
}

output "oauth_callback_url" {
  description = "The OAuth function: /start, /callback, /status, /disconnect."
  value       = google_cloudfunctions2_function.main["oauth_callback"].url
}

output "google_redirect_uri" {
  description = "Authorized redirect URI to register on the OAuth client (APIs & Services > Credentials)."
  value       = local.google_redirect_uri
}

output "connect_link" {
  description = "Open this with the CONNECT_KEY appended (the key is a secret: it is not in the output). Admins connect the Google account here."
  value       = "${local.function_urls.oauth_callback}/start?key="
}

output "secret_ids" {
  description = "Secret Manager secrets to fill with `gcloud secrets versions add` (refresh_token is written by the function)."
  value       = { for key, secret in google_secret_manager_secret.main : key => secret.secret_id }
}

output "service_accounts" {
  description = "Runtime service account of each function, the scheduler's and the builder's."
  value = merge(
    { for key, account in google_service_account.function : key => account.email },
    {
      scheduler   = google_service_account.scheduler.email
      builder     = google_service_account.builder.email
      pubsub_push = google_service_account.pubsub_push.email
    },
  )
}

output "source_bucket" {
  description = "Bucket holding the functions' source zips."
  value       = google_storage_bucket.sources.name
}

output "sync_requests_topic" {
  description = "The Pub/Sub topic of sync requests (PUBSUB_TOPIC of booking_hook and calendar_import)."
  value       = google_pubsub_topic.sync_requests.id
}

output "dead_letter_subscription" {
  description = "Sync requests calendar_import refused max_delivery_attempts times: read them with `gcloud pubsub subscriptions pull --auto-ack`."
  value       = google_pubsub_subscription.sync_requests_dead.id
}
