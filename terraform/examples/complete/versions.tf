terraform {
  required_version = ">= 1.0.0"

  # A root module pins what it runs with; commit the .terraform.lock.hcl that `terraform init`
  # writes, so every apply uses the same provider builds (their checksums are in it).
  required_providers {
    vault = {
      source  = "hashicorp/vault"
      version = "~> 5.0"
    }
    kubernetes = {
      source  = "hashicorp/kubernetes"
      version = "~> 3.0"
    }
  }
}
