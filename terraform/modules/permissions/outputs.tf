output "mounts" {
  description = "Each cluster's Kubernetes secrets engine mount path (the cluster's vault_mount in the bastion's config)."
  value       = local.mounts
}

output "vault_roles" {
  description = "Every Vault role, keyed \"<cluster>/<role>\": cluster, mount, name, namespaces, kubernetes_role_type, token_default_ttl, token_max_ttl, rules and generated_role_rules (their JSON for Vault), creds_parameters (the request fields the bastion sends)."
  value       = local.vault_roles
}

output "mount_max_lease_ttls" {
  description = "Per cluster, the max lease TTL of its mount: the longest token_max_ttl of its roles."
  value       = local.mount_max_lease_ttls
}

output "bastion_policy" {
  description = "The bastion's Vault policy (JSON): its roles' creds paths, renewing and revoking its own leases, and its own token's renew-self and lookup-self."
  value       = local.bastion_policy
}

output "debug_namespaces" {
  description = "Per cluster, the namespaces the debug roles may issue credentials for."
  value       = local.debug_namespaces
}

output "engine_namespace_rules" {
  description = "Per cluster and debug namespace, the rules the secrets engine's identity needs there."
  value       = local.engine_namespace_rules
}

output "engine_browse_rules" {
  description = "Per cluster with a browse role: its browse namespace, the engine's rules there (namespace_rules) and cluster-wide (cluster_rules)."
  value       = local.engine_browse_rules
}

output "managed_by_labels" {
  description = "The labels Vault puts on every Kubernetes object it creates for the bastion (as the bastion labels its own)."
  value       = local.permissions.managed_by_labels
}
