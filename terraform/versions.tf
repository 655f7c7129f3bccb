# Exact pins: a provider upgrade is a reviewed change, never a side effect of `terraform init`.
# Commit .terraform.lock.hcl after the first `terraform init` (it records the providers' checksums).
terraform {
  required_version = ">= 1.5.0"

  required_providers {
    google = {
      source  = "hashicorp/google"
      version = "= 6.50.0"
    }
    archive = {
      source  = "hashicorp/archive"
      version = "= 2.7.1"
    }
  }
}
