# Function sources: one zip per bundle (build/<function>/, made by `make bundle`), uploaded under its
# content hash so that any code or pin change yields a new object name and hence a new deployment, while an
# unchanged bundle plans no change at all.
resource "google_storage_bucket" "sources" {
  #checkov:skip=CKV_GCP_62:Access logs of a bucket holding only deployable source zips add cost, not insight; Cloud Audit Logs record admin access.
  name     = "${var.project_id}-${var.name_prefix}-sources"
  project  = var.project_id
  location = var.region

  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = false

  versioning {
    enabled = true
  }

  # Old bundles are only useful for a rollback shortly after a deploy.
  lifecycle_rule {
    condition {
      num_newer_versions = 3
      with_state         = "ARCHIVED"
    }
    action {
      type = "Delete"
    }
  }

  lifecycle_rule {
    condition {
      days_since_noncurrent_time = 30
    }
    action {
      type = "Delete"
    }
  }

  depends_on = [google_project_service.main]
}

data "archive_file" "source" {
  for_each = local.functions

  type             = "zip"
  source_dir       = "${path.module}/../build/${each.key}"
  output_path      = "${path.module}/.terraform/bundles/${each.key}.zip"
  output_file_mode = "0644"
}

resource "google_storage_bucket_object" "source" {
  for_each = local.functions

  name         = "${each.key}/${data.archive_file.source[each.key].output_sha256}.zip"
  bucket       = google_storage_bucket.sources.name
  source       = data.archive_file.source[each.key].output_path
  content_type = "application/zip"
}

# Images built from the sources. Our own repository (instead of the implicit gcf-artifacts) so the build
# service account can be granted write access on it alone, and old images are cleaned up.
resource "google_artifact_registry_repository" "functions" {
  #checkov:skip=CKV_GCP_84:Images hold only the public source of this project; Google-managed encryption is adequate and a CMEK key ring is a cost most users of this tool do not want.
  project       = var.project_id
  location      = var.region
  repository_id = "${var.name_prefix}-functions"
  format        = "DOCKER"
  description   = "Images of the calsync Cloud Functions (built by Cloud Build from the source bucket)."

  cleanup_policies {
    id     = "keep-recent"
    action = "KEEP"
    most_recent_versions {
      keep_count = 5
    }
  }

  cleanup_policies {
    id     = "delete-old"
    action = "DELETE"
    condition {
      older_than = "2592000s"
    }
  }

  depends_on = [google_project_service.main]
}
