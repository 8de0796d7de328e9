# Vault: an administrator's token from the environment (VAULT_TOKEN, e.g. from `vault login`),
# never a variable: variables end up in plan files and shell history.
provider "vault" {
  address      = var.vault_address
  ca_cert_file = var.vault_ca_cert_file
}

# The cluster, as an administrator's kubeconfig context reaches it. For a second cluster, add
# a provider with an alias and a second module "kubernetes_<name>" using it.
provider "kubernetes" {
  config_path    = var.kubeconfig_path
  config_context = var.kube_context
}
