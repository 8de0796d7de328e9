terraform {
  required_version = ">= 1.0.0"

  required_providers {
    vault = {
      source = "hashicorp/vault"
      # vault_kubernetes_secret_backend and its roles appeared in 3.11; every argument used
      # here has kept its meaning through 5.x.
      version = ">= 3.11.0, < 6.0.0"
    }
  }
}
