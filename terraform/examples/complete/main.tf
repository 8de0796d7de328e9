# The whole provisioning of one cluster and Vault for the bastion: docs/provisioning.md walks
# through it from an empty cluster and Vault to the first operator login.

module "kubernetes" {
  source = "../../modules/kubernetes"

  cluster_name     = var.cluster_name
  grants           = var.grants
  grant_scopes     = var.grant_scopes
  browse_namespace = var.browse_namespace
}

module "vault" {
  source = "../../modules/vault"

  clusters = {
    (var.cluster_name) = {
      kubernetes_host    = var.kubernetes_host
      kubernetes_ca_cert = var.kubernetes_ca_cert_file != "" ? file(var.kubernetes_ca_cert_file) : module.kubernetes.cluster_ca_cert
      browse_namespace   = module.kubernetes.browse_namespace
    }
  }
  service_account_jwts = { (var.cluster_name) = module.kubernetes.engine_service_account_token }
  grants               = var.grants
  grant_scopes         = var.grant_scopes
  token_max_ttls       = var.token_max_ttls
  bastion_cidrs        = var.bastion_cidrs
  audit_file_path      = var.vault_audit_file_path
}
