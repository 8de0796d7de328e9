# One cluster's side of the bastion: the identity Vault's Kubernetes secrets engine acts as,
# with exactly the rights it needs to issue and revoke the bastion's credentials, and Pod
# Security Admission labels. docs/provisioning.md says what each right is for.

module "permissions" {
  source = "../permissions"

  clusters = { (var.cluster_name) = { browse_namespace = var.browse_namespace } }
  grants = {
    for name, grant in var.grants : name => {
      clusters   = [var.cluster_name]
      namespaces = grant.namespaces
      modes      = grant.modes
    } if contains(grant.clusters, var.cluster_name)
  }
  grant_scopes = {
    for name, scopes in var.grant_scopes : name => scopes
    if contains(try(var.grants[name].clusters, []), var.cluster_name)
  }
  # A debug with copy or pod mode creates pods: there it could mount the engine's token.
  reserved_namespaces = [var.engine_namespace]
}

locals {
  pod_security_labels = {
    "pod-security.kubernetes.io/enforce"         = var.pod_security_enforce
    "pod-security.kubernetes.io/enforce-version" = var.pod_security_version
    "pod-security.kubernetes.io/audit"           = "restricted"
    "pod-security.kubernetes.io/audit-version"   = var.pod_security_version
    "pod-security.kubernetes.io/warn"            = "restricted"
    "pod-security.kubernetes.io/warn-version"    = var.pod_security_version
  }
  labels = module.permissions.managed_by_labels

  engine_subject = {
    name      = kubernetes_service_account_v1.engine.metadata[0].name
    namespace = kubernetes_namespace_v1.engine.metadata[0].name
  }
}

# ----------------------------------------------------------------- the engine's identity

resource "kubernetes_namespace_v1" "engine" {
  metadata {
    name   = var.engine_namespace
    labels = merge(local.labels, local.pod_security_labels)
  }
}

resource "kubernetes_service_account_v1" "engine" {
  metadata {
    name      = var.engine_service_account
    namespace = kubernetes_namespace_v1.engine.metadata[0].name
    labels    = local.labels
  }
  # No pod runs as this account: its token is for Vault, which calls the API from outside.
  automount_service_account_token = false
}

# Vault keeps the engine's token in its configuration and never renews it, so the token must
# not expire: a token Secret bound to the account (revoked by deleting the Secret; replace it
# with `terraform apply -replace=...engine_token` to rotate). A TokenRequest token would expire
# and silently stop every credential the bastion asks for.
resource "kubernetes_secret_v1" "engine_token" {
  metadata {
    name      = "${var.engine_service_account}-token"
    namespace = kubernetes_namespace_v1.engine.metadata[0].name
    labels    = local.labels
    annotations = {
      "kubernetes.io/service-account.name" = kubernetes_service_account_v1.engine.metadata[0].name
    }
  }
  type                           = "kubernetes.io/service-account-token"
  wait_for_service_account_token = true
}

# ------------------------------------------------------- in each namespace a grant names

# Make and delete the session's service account, its token, its Role and RoleBinding, and
# hold the Role's rules (the union of the grants naming this namespace).
resource "kubernetes_role_v1" "engine" {
  for_each = module.permissions.engine_namespace_rules[var.cluster_name]

  metadata {
    name      = var.engine_service_account
    namespace = each.key
    labels    = local.labels
  }

  dynamic "rule" {
    for_each = each.value
    content {
      api_groups = rule.value.apiGroups
      resources  = rule.value.resources
      verbs      = rule.value.verbs
    }
  }
}

resource "kubernetes_role_binding_v1" "engine" {
  for_each = kubernetes_role_v1.engine

  metadata {
    name      = var.engine_service_account
    namespace = each.key
    labels    = local.labels
  }
  role_ref {
    api_group = "rbac.authorization.k8s.io"
    kind      = "Role"
    name      = each.value.metadata[0].name
  }
  subject {
    kind      = "ServiceAccount"
    name      = local.engine_subject.name
    namespace = local.engine_subject.namespace
  }
}

resource "kubernetes_labels" "pod_security" {
  for_each = var.label_debug_namespaces ? toset(module.permissions.debug_namespaces[var.cluster_name]) : toset([])

  api_version = "v1"
  kind        = "Namespace"
  metadata {
    name = each.key
  }
  labels        = local.pod_security_labels
  field_manager = "k8s-debug-bastion"
  # These labels are this configuration's to set: a value someone set by hand is overwritten
  # (and shows in the plan) rather than left to weaken the namespace.
  force = true
}

# --------------------------------------------------- the console's browse role (optional)

resource "kubernetes_namespace_v1" "browse" {
  for_each = module.permissions.engine_browse_rules

  metadata {
    name   = each.value.namespace
    labels = merge(local.labels, local.pod_security_labels)
  }
}

# In the browse namespace: the browse service accounts and their tokens, nothing else.
resource "kubernetes_role_v1" "engine_browse" {
  for_each = module.permissions.engine_browse_rules

  metadata {
    name      = var.engine_service_account
    namespace = kubernetes_namespace_v1.browse[each.key].metadata[0].name
    labels    = local.labels
  }

  dynamic "rule" {
    for_each = each.value.namespace_rules
    content {
      api_groups = rule.value.apiGroups
      resources  = rule.value.resources
      verbs      = rule.value.verbs
    }
  }
}

resource "kubernetes_role_binding_v1" "engine_browse" {
  for_each = kubernetes_role_v1.engine_browse

  metadata {
    name      = var.engine_service_account
    namespace = each.value.metadata[0].namespace
    labels    = local.labels
  }
  role_ref {
    api_group = "rbac.authorization.k8s.io"
    kind      = "Role"
    name      = each.value.metadata[0].name
  }
  subject {
    kind      = "ServiceAccount"
    name      = local.engine_subject.name
    namespace = local.engine_subject.namespace
  }
}

# Cluster-wide: make and delete the browse ClusterRole and its ClusterRoleBinding, and hold
# the read-only rules the ClusterRole grants.
resource "kubernetes_cluster_role_v1" "engine_browse" {
  for_each = module.permissions.engine_browse_rules

  metadata {
    name   = "${var.engine_service_account}-browse"
    labels = local.labels
  }

  dynamic "rule" {
    for_each = each.value.cluster_rules
    content {
      api_groups = rule.value.apiGroups
      resources  = rule.value.resources
      verbs      = rule.value.verbs
    }
  }
}

resource "kubernetes_cluster_role_binding_v1" "engine_browse" {
  for_each = kubernetes_cluster_role_v1.engine_browse

  metadata {
    name   = each.value.metadata[0].name
    labels = local.labels
  }
  role_ref {
    api_group = "rbac.authorization.k8s.io"
    kind      = "ClusterRole"
    name      = each.value.metadata[0].name
  }
  subject {
    kind      = "ServiceAccount"
    name      = local.engine_subject.name
    namespace = local.engine_subject.namespace
  }
}
