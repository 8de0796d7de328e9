output "engine_service_account_token" {
  description = "The secrets engine's token: the vault module's service_account_jwts for this cluster."
  value       = kubernetes_secret_v1.engine_token.data["token"]
  sensitive   = true
}

output "cluster_ca_cert" {
  description = "The cluster's CA as the token Secret carries it (kube-root-ca): the vault module's kubernetes_ca_cert, when the API server's certificate chains to it."
  # A CA certificate is public; the Secret's other key (the token) stays sensitive.
  value = nonsensitive(kubernetes_secret_v1.engine_token.data["ca.crt"])
}

output "engine_service_account" {
  description = "The secrets engine's identity as namespace/name, for audit-log queries and RBAC reviews."
  value       = "${local.engine_subject.namespace}/${local.engine_subject.name}"
}

output "browse_namespace" {
  description = "The namespace of the browse service accounts (the cluster's browse_account_namespace in the bastion's config), or \"\" without a browse role."
  value       = var.browse_namespace
}

output "debug_namespaces" {
  description = "The namespaces the grants name on this cluster: the engine's Roles are there, and (with label_debug_namespaces) the Pod Security labels."
  value       = module.permissions.debug_namespaces[var.cluster_name]
}
