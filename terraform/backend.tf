# State lives in a GCS bucket created once by hand (see docs/DEPLOY.md); the bucket and prefix are given at
# init time: terraform init -backend-config="bucket=STATE_BUCKET" -backend-config="prefix=calsync"
terraform {
  backend "gcs" {}
}
