terraform {
  required_version = ">= 1.0.0"

  required_providers {
    kubernetes = {
      source = "hashicorp/kubernetes"
      # The *_v1 resources, kubernetes_labels and wait_for_service_account_token are all in
      # 2.23; 3.x keeps them.
      version = ">= 2.23.0, < 4.0.0"
    }
  }
}
