# The SyncStore: mappings, cursors, outbox, OAuth states, leases, status (STORE=firestore).
resource "google_firestore_database" "main" {
  project     = var.project_id
  name        = var.firestore_database
  location_id = coalesce(var.firestore_location, var.region)
  type        = "FIRESTORE_NATIVE"

  concurrency_mode            = "PESSIMISTIC"
  app_engine_integration_mode = "DISABLED"
  # Recover from a bad sync run (e.g. a mass edit) by reading the state as of up to 7 days ago.
  point_in_time_recovery_enablement = "POINT_IN_TIME_RECOVERY_ENABLED"
  delete_protection_state           = var.deletion_protection ? "DELETE_PROTECTION_ENABLED" : "DELETE_PROTECTION_DISABLED"
  # `terraform destroy` leaves the data in place; delete it deliberately in the console.
  deletion_policy = "ABANDON"

  depends_on = [google_project_service.main]
}

# Unfinished OAuth consents expire: Firestore's TTL deletes each oauth_states document (in any collection of
# that id) some time after its `expires_at`. The code never trusts an expired state meanwhile; TTL only
# keeps the collection from growing.
resource "google_firestore_field" "oauth_state_ttl" {
  project    = var.project_id
  database   = google_firestore_database.main.name
  collection = "oauth_states"
  field      = "expires_at"

  ttl_config {}
}

# A booking moved to another staff member's calendar is looked up in every connection's `mappings`
# (FirestoreSyncStore.find_mappings): a collection-group query on `booking_key`, which Firestore indexes
# automatically only at collection scope. The collection-scope index stays as it is.
resource "google_firestore_field" "mappings_by_booking_key" {
  project    = var.project_id
  database   = google_firestore_database.main.name
  collection = "mappings"
  field      = "booking_key"

  index_config {
    indexes {
      order       = "ASCENDING"
      query_scope = "COLLECTION"
    }
    indexes {
      order       = "ASCENDING"
      query_scope = "COLLECTION_GROUP"
    }
  }
}
