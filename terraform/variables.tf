variable "project_id" {
  description = "Google Cloud project that hosts everything (an existing project with billing)."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]$", var.project_id))
    error_message = "project_id must be a project ID (6-30 lowercase letters, digits, hyphens), not a name or number."
  }
}

variable "region" {
  description = "Region of the functions, the scheduler job, the source bucket and (by default) Firestore."
  type        = string
  default     = "europe-west1"

  validation {
    condition     = can(regex("^[a-z]+-[a-z]+[0-9]$", var.region))
    error_message = "region must be a Cloud region such as europe-west1 or us-central1."
  }
}

variable "name_prefix" {
  description = "Prefix of every resource name (functions, service accounts, secrets, bucket)."
  type        = string
  default     = "calsync"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,11}$", var.name_prefix))
    error_message = "name_prefix must be 2-12 lowercase letters, digits or hyphens, starting with a letter."
  }
}

variable "labels" {
  description = "Extra labels on every resource that takes labels."
  type        = map(string)
  default     = {}
}

variable "directus_url" {
  description = "Base URL of the Directus API the functions call (DIRECTUS_URL)."
  type        = string

  validation {
    condition     = can(regex("^https://[^/?#\\s]+(/[^?#\\s]*)?$", var.directus_url))
    error_message = "directus_url must be an https:// URL without query or fragment."
  }
}

variable "directus_public_url" {
  description = "Base URL people open Directus at, where the OAuth flow sends them back and links in events point (DIRECTUS_PUBLIC_URL), without /admin; null: directus_url."
  type        = string
  default     = null

  validation {
    condition     = var.directus_public_url == null || can(regex("^https://[^/?#\\s]+(/[^?#\\s]*)?$", var.directus_public_url))
    error_message = "directus_public_url must be null or an https:// URL without query or fragment."
  }

  # calsync appends /admin/... itself: a base ending in /admin makes every link /admin/admin/...
  validation {
    condition     = var.directus_public_url == null || !can(regex("/admin/*$", var.directus_public_url))
    error_message = "directus_public_url must be the Directus base URL without /admin (e.g. https://crm.example.com): calsync adds /admin to its links."
  }
}

variable "allowed_google_accounts" {
  description = "Who may connect the Google account (oauth_callback's ALLOWED_GOOGLE_ACCOUNTS): comma-separated emails and/or @domain entries, or the explicit word any. Required: anyone holding the Connect link could otherwise connect their own calendar."
  type        = string

  validation {
    condition = var.allowed_google_accounts == "any" || alltrue([
      for entry in split(",", var.allowed_google_accounts) :
      can(regex("^([A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+)?@([A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?\\.)+[A-Za-z0-9-]{2,}$", trimspace(entry)))
    ])
    error_message = "allowed_google_accounts must be any, or a comma-separated list of emails (ops@example.com) and @domain entries (@example.com)."
  }
}

variable "directus_collection" {
  description = "Directus collection that holds the bookings (DIRECTUS_COLLECTION)."
  type        = string
  default     = "bookings"

  validation {
    condition     = can(regex("^[A-Za-z_][A-Za-z0-9_]{0,63}$", var.directus_collection))
    error_message = "directus_collection must be a Directus collection name (letters, digits, underscores)."
  }
}

variable "google_client_id" {
  description = "OAuth 2.0 client ID (type: Web application) from APIs & Services > Credentials (GOOGLE_CLIENT_ID)."
  type        = string

  validation {
    condition     = can(regex("^[0-9]+-[a-z0-9]+\\.apps\\.googleusercontent\\.com$", var.google_client_id))
    error_message = "google_client_id must look like 1234567890-abc123.apps.googleusercontent.com."
  }
}

variable "calendar_id" {
  description = "Google Calendar the bookings go to (GOOGLE_CALENDAR_ID): primary or a calendar's ID."
  type        = string
  default     = "primary"

  validation {
    condition     = length(trimspace(var.calendar_id)) > 0 && !can(regex("\\s", var.calendar_id))
    error_message = "calendar_id must be primary or a calendar ID (no spaces)."
  }
}

variable "timezone" {
  description = "IANA time zone of the bookings and of the import schedule (TIMEZONE), e.g. Europe/Berlin."
  type        = string
  default     = "UTC"

  validation {
    condition     = can(regex("^(UTC|[A-Z][A-Za-z_+-]+(/[A-Za-z0-9_+-]+){1,2})$", var.timezone))
    error_message = "timezone must be an IANA time zone name such as UTC or Europe/Berlin."
  }
}

variable "schedule" {
  description = "Cron schedule of the import cycle (Cloud Scheduler, in var.timezone)."
  type        = string
  default     = "*/5 * * * *"

  validation {
    condition     = length(split(" ", trimspace(var.schedule))) == 5
    error_message = "schedule must be a five-field cron expression, e.g. */5 * * * *."
  }
}

variable "firestore_location" {
  description = "Firestore location (a region like europe-west1 or a multi-region like eur3); null: var.region. Cannot change later."
  type        = string
  default     = null
}

variable "firestore_database" {
  description = "Firestore database ID; (default) or a named database when the project's default one is used otherwise."
  type        = string
  default     = "(default)"

  validation {
    condition     = var.firestore_database == "(default)" || can(regex("^[a-z][a-z0-9-]{2,61}[a-z0-9]$", var.firestore_database))
    error_message = "firestore_database must be (default) or 4-63 lowercase letters, digits and hyphens."
  }
}

variable "deletion_protection" {
  description = "Protect the Firestore database from deletion (turn off only to tear a test project down)."
  type        = bool
  default     = true
}

variable "functions" {
  description = "Size of each function; every attribute is optional. concurrency: requests one instance serves at once (Cloud Run allows up to 1000, but above 1 only with cpu >= 1)."
  type = object({
    # booking_hook: 80 concurrent requests on 1 vCPU. The handler is I/O bound (it waits on Directus and
    # Google) and thread-safe (per-thread HTTP sessions, Calendar calls serialised per instance), so one
    # instance absorbs a Directus bulk edit (one Flow call per item) instead of starting one per call.
    # Public endpoint: see docs/DEPLOY.md "Rate-limiting the public hook" for what to put in front of it.
    booking_hook = optional(object({
      memory          = optional(string, "512M")
      cpu             = optional(string, "1")
      concurrency     = optional(number, 80)
      timeout_seconds = optional(number, 60)
      min_instances   = optional(number, 0)
      max_instances   = optional(number, 5)
      ingress         = optional(string, "ALLOW_ALL")
    }), {})
    # calendar_import: one cycle per request (a lease per connection; a second call for the same one is
    # busy). Pub/Sub pushes each connection's sync request as its own request, so max_instances x
    # concurrency is how many connections sync at once, bounded below by Google Calendar's quotas.
    calendar_import = optional(object({
      memory          = optional(string, "512M")
      cpu             = optional(string, "0.333")
      concurrency     = optional(number, 1)
      timeout_seconds = optional(number, 540)
      min_instances   = optional(number, 0)
      max_instances   = optional(number, 10)
      ingress         = optional(string, "ALLOW_ALL")
    }), {})
    oauth_callback = optional(object({
      memory          = optional(string, "256M")
      cpu             = optional(string, "0.167")
      concurrency     = optional(number, 1)
      timeout_seconds = optional(number, 60)
      min_instances   = optional(number, 0)
      max_instances   = optional(number, 2)
      ingress         = optional(string, "ALLOW_ALL")
    }), {})
  })
  default = {}

  validation {
    condition = alltrue([
      for f in values(var.functions) : f.concurrency >= 1 && f.concurrency <= 1000 && floor(f.concurrency) == f.concurrency
    ])
    error_message = "concurrency must be a whole number from 1 to 1000."
  }

  validation {
    condition = alltrue([
      for f in values(var.functions) : f.concurrency == 1 || try(tonumber(f.cpu) >= 1, false)
    ])
    error_message = "concurrency above 1 needs cpu of at least 1 (Cloud Run serves one request at a time below one vCPU)."
  }

  # ALLOW_INTERNAL_AND_GCLB: only through a load balancer, e.g. the Cloud Armor rate limit in docs/DEPLOY.md.
  validation {
    condition = alltrue([
      for f in values(var.functions) : contains(["ALLOW_ALL", "ALLOW_INTERNAL_ONLY", "ALLOW_INTERNAL_AND_GCLB"], f.ingress)
    ])
    error_message = "ingress must be ALLOW_ALL, ALLOW_INTERNAL_ONLY or ALLOW_INTERNAL_AND_GCLB."
  }

  validation {
    condition = alltrue([
      for f in values(var.functions) : can(regex("^[0-9]+(M|Mi|G|Gi)$", f.memory))
    ])
    error_message = "memory must be a size such as 256M, 512Mi or 1Gi."
  }

  validation {
    condition = alltrue([
      for f in values(var.functions) : f.timeout_seconds >= 1 && f.timeout_seconds <= 3600
    ])
    error_message = "timeout_seconds must be between 1 and 3600 (HTTP functions, 2nd gen)."
  }

  # Each cycle in flight may use up to its Google user's 600 requests/min; 16 of them stay under the
  # project's 10,000/min even then (README "Push notifications and Pub/Sub", the arithmetic for 1,000).
  validation {
    condition     = var.functions.calendar_import.max_instances * var.functions.calendar_import.concurrency <= 16
    error_message = "calendar_import's max_instances x concurrency must be at most 16: more cycles at once could exceed Google Calendar's 10,000 requests/min per project (16 x 600/min per user = 9,600)."
  }

  validation {
    condition     = var.functions.calendar_import.timeout_seconds <= 1740
    error_message = "calendar_import.timeout_seconds must leave room under Cloud Scheduler's 30 minute attempt deadline (<= 1740)."
  }

  validation {
    condition = alltrue([
      for f in values(var.functions) : f.min_instances >= 0 && f.max_instances >= 1 && f.min_instances <= f.max_instances
    ])
    error_message = "each function needs 0 <= min_instances <= max_instances and max_instances >= 1."
  }
}

variable "sync_requests" {
  description = "Delivery of sync requests to calendar_import by the Pub/Sub push subscription: the retry backoff (seconds) and the attempts before a request goes to the dead-letter topic."
  type = object({
    # A 5xx means Google, Directus or the store had trouble: the first retry soon, then backing off to
    # 10 minutes; 10 attempts span about 40 minutes, longer than most outages.
    minimum_backoff_seconds = optional(number, 10)
    maximum_backoff_seconds = optional(number, 600)
    max_delivery_attempts   = optional(number, 10)
  })
  default = {}

  validation {
    condition = (var.sync_requests.minimum_backoff_seconds >= 0 &&
      var.sync_requests.minimum_backoff_seconds <= var.sync_requests.maximum_backoff_seconds &&
    var.sync_requests.maximum_backoff_seconds <= 600)
    error_message = "sync_requests needs 0 <= minimum_backoff_seconds <= maximum_backoff_seconds <= 600 (Pub/Sub's limits)."
  }

  validation {
    condition     = var.sync_requests.max_delivery_attempts >= 5 && var.sync_requests.max_delivery_attempts <= 100 && floor(var.sync_requests.max_delivery_attempts) == var.sync_requests.max_delivery_attempts
    error_message = "sync_requests.max_delivery_attempts must be a whole number from 5 to 100 (Pub/Sub's limits)."
  }
}

variable "push_notifications" {
  description = "Ask Google for push notifications (events.watch) to booking_hook's /notifications, so calendar changes reach Directus in seconds; the schedule stays the safety net."
  type        = bool
  default     = true
}

variable "route_field" {
  description = "ROUTE_FIELD: the bookings field whose value picks the staff member's connection (README, Staff calendars); null: every booking goes to the default connection."
  type        = string
  default     = null
}
