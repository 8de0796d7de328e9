output "approle_role_id" {
  description = "The AppRole's role_id: vault.approle.role_id in the bastion's config (an identifier, not a secret; the secret-id is)."
  value       = vault_approle_auth_backend_role.bastion.role_id
}

output "approle_secret_id_path" {
  description = "Where an administrator issues the bastion's secret-id (vault write -f -field=secret_id <this>); it goes into the file named by vault.approle.secret_id_file."
  value       = "auth/${vault_approle_auth_backend_role.bastion.backend}/role/${vault_approle_auth_backend_role.bastion.role_name}/secret-id"
}

output "cert_role_name" {
  description = "The cert auth role for vault.tls_client.role in the bastion's config, or null without certificate login."
  value       = length(vault_cert_auth_backend_role.bastion) > 0 ? vault_cert_auth_backend_role.bastion[0].name : null
}

output "policy_name" {
  description = "The bastion's Vault policy."
  value       = vault_policy.bastion.name
}

output "mounts" {
  description = "Per cluster, the Kubernetes secrets engine mount (vault_mount in the bastion's config)."
  value       = { for cluster, backend in vault_kubernetes_secret_backend.cluster : cluster => backend.path }
}

output "roles" {
  description = "Per cluster, the Vault roles made for the grants (the grants' vault_role), sorted."
  value = {
    for cluster in keys(var.clusters) : cluster => sort([
      for role in values(module.permissions.vault_roles) : role.name
      if role.cluster == cluster && role.kubernetes_role_type == "Role"
    ])
  }
}

output "bastion_clusters" {
  description = "The clusters section of the bastion's config as far as Vault decides it (add each cluster's ca_file, the API server's CA on the bastion host)."
  value = [
    for cluster, settings in var.clusters : merge(
      {
        name        = cluster
        api_url     = settings.kubernetes_host
        vault_mount = vault_kubernetes_secret_backend.cluster[cluster].path
      },
      # Only for clusters with a browse role (a conditional between two object types is an
      # error in Terraform 1.0; a filtered for expression is not).
      {
        for key, value in {
          browse_vault_role        = var.browse_role_name
          browse_account_namespace = settings.browse_namespace
        } : key => value if settings.browse_namespace != ""
      },
    )
  ]
}
