# The redirect URI is computed before the function exists (it is one of its env vars); make sure the
# deployed function really answers at that address.
check "oauth_callback_url_is_predicted" {
  assert {
    condition     = google_cloudfunctions2_function.main["oauth_callback"].url == local.function_urls.oauth_callback
    error_message = "oauth_callback is served at ${google_cloudfunctions2_function.main["oauth_callback"].url}, not at the predicted ${local.function_urls.oauth_callback}: the redirect URI (GOOGLE_REDIRECT_URI) would be wrong."
  }
}
