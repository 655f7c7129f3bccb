locals {
  # Plain settings, the same for every function (names are the product's documented environment contract).
  environment = merge(
    {
      STORE                = local.store
      TOKEN_STORE          = local.token_store
      GOOGLE_CLOUD_PROJECT = var.project_id
      GOOGLE_CLIENT_ID     = var.google_client_id
      GOOGLE_REDIRECT_URI  = local.google_redirect_uri
      GOOGLE_CALENDAR_ID   = var.calendar_id
      DIRECTUS_URL         = var.directus_url
      DIRECTUS_COLLECTION  = var.directus_collection
      TIMEZONE             = var.timezone
      # Directus shows a cycle as overdue after three ticks: the tick of var.schedule ("*/N ..."), else 5
      SYNC_TICK_MINUTES = tostring(can(regex("^\\*/([0-9]+) ", var.schedule)) ? regex("^\\*/([0-9]+) ", var.schedule)[0] : "5")
    },
    var.directus_public_url == null ? {} : { DIRECTUS_PUBLIC_URL = var.directus_public_url },
    # every function routes bookings to connections the same way (booking_hook's deliveries, the tick)
    var.route_field == null ? {} : { ROUTE_FIELD = var.route_field },
  )

  # Settings only one function reads.
  function_environment = {
    # All three publish sync requests (pubsub.tf): the notification receiver, the tick, a new consent.
    booking_hook = { PUBSUB_TOPIC = google_pubsub_topic.sync_requests.id }
    # The cycle keeps each connection's push channel (events.watch) pointed at booking_hook's receiver,
    # which is public like the rest of booking_hook and authenticates each notification by its channel
    # token; with var.push_notifications = false no channel is made and the schedule alone syncs.
    calendar_import = merge(
      { PUBSUB_TOPIC = google_pubsub_topic.sync_requests.id },
      var.push_notifications ? { NOTIFICATION_URL = "${local.function_urls.booking_hook}/notifications" } : {},
    )
    # Who may complete a consent; "any" is an explicit choice, never a default.
    oauth_callback = {
      ALLOWED_GOOGLE_ACCOUNTS = var.allowed_google_accounts
      PUBSUB_TOPIC            = google_pubsub_topic.sync_requests.id
    }
  }

  # The Python Functions Framework serves requests on gunicorn threads, THREADS of them (default 4 per
  # CPU): with more concurrency than threads, Cloud Run's extra requests would only queue inside the instance.
  runtime_environment = {
    for key in keys(local.functions) :
    key => var.functions[key].concurrency > 1 ? { THREADS = tostring(var.functions[key].concurrency) } : {}
  }
}

resource "google_cloudfunctions2_function" "main" {
  #checkov:skip=CKV_GCP_124:Callers are outside any VPC (Directus, browsers, Google's OAuth redirect, Cloud Scheduler), so ingress must be ALLOW_ALL; calendar_import is restricted by IAM (scheduler SA only), the two public ones authenticate every request in code.
  for_each = local.functions

  project     = var.project_id
  location    = var.region
  name        = each.value.name
  description = each.value.description

  build_config {
    runtime           = "python312"
    entry_point       = each.key
    service_account   = google_service_account.builder.id
    docker_repository = google_artifact_registry_repository.functions.id

    source {
      storage_source {
        bucket = google_storage_bucket.sources.name
        object = google_storage_bucket_object.source[each.key].name
      }
    }
  }

  service_config {
    service_account_email = google_service_account.function[each.key].email

    available_memory                 = var.functions[each.key].memory
    available_cpu                    = var.functions[each.key].cpu
    timeout_seconds                  = var.functions[each.key].timeout_seconds
    min_instance_count               = var.functions[each.key].min_instances
    max_instance_count               = var.functions[each.key].max_instances
    max_instance_request_concurrency = var.functions[each.key].concurrency
    # Reachable from the internet by default (Directus, browsers, Cloud Scheduler are not in a VPC); who may
    # invoke is decided by the Cloud Run invoker bindings in service_accounts.tf. ALLOW_INTERNAL_AND_GCLB
    # puts a function behind a load balancer only (booking_hook's rate limit, docs/DEPLOY.md).
    ingress_settings               = var.functions[each.key].ingress
    all_traffic_on_latest_revision = true

    environment_variables = merge(local.environment, local.function_environment[each.key], local.runtime_environment[each.key])

    dynamic "secret_environment_variables" {
      for_each = local.secret_env[each.key]
      content {
        key        = local.secrets[secret_environment_variables.value].env
        project_id = var.project_id
        secret     = google_secret_manager_secret.main[secret_environment_variables.value].secret_id
        version    = "latest"
      }
    }
  }

  depends_on = [
    google_project_service.main,
    google_project_iam_member.builder_logs,
    google_project_iam_member.builder_sources,
    google_storage_bucket_iam_member.builder_sources,
    google_artifact_registry_repository_iam_member.builder,
    google_secret_manager_secret_iam_member.reader,
  ]
}
