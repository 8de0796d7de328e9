output "bastion_config" {
  description = "What the bastion's config needs from this provisioning: vault.approle.role_id, and per cluster name, api_url, vault_mount and the browse role (add ca_file, the API server's CA on the bastion host)."
  value = {
    vault = {
      address = var.vault_address
      approle = { role_id = module.vault.approle_role_id }
    }
    clusters = module.vault.bastion_clusters
  }
}

output "vault_roles" {
  description = "Per cluster, the Vault roles the grants may name as vault_role."
  value       = module.vault.roles
}

output "approle_secret_id_path" {
  description = "Where to issue the bastion's secret-id: vault write -f -field=secret_id <this> (docs/provisioning.md)."
  value       = module.vault.approle_secret_id_path
}

output "engine_service_account" {
  description = "The identity Vault's secrets engine acts as in the cluster (namespace/name)."
  value       = module.kubernetes.engine_service_account
}
