variable "clusters" {
  description = <<-EOT
    The clusters the bastion debugs, keyed by the name the bastion's config gives them
    (clusters[].name). browse_namespace is where Vault creates the console's read-only service
    accounts (the config's browse_account_namespace), or "" for no browse role on that cluster
    (the console then cannot list it; `debug NAMESPACE/POD` still works).
  EOT
  type = map(object({
    browse_namespace = string
  }))

  validation {
    condition     = length(var.clusters) > 0
    error_message = "Name at least one cluster in clusters."
  }
  validation {
    condition     = alltrue([for name in keys(var.clusters) : can(regex("^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$", name))])
    error_message = "Every cluster name must be a DNS label (lower-case letters, digits and '-'), as in the bastion's config."
  }
  validation {
    condition = alltrue([
      for cluster in values(var.clusters) :
      cluster.browse_namespace == "" || (
        can(regex("^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$", cluster.browse_namespace)) &&
        !contains(["default", "kube-system", "kube-public", "kube-node-lease"], cluster.browse_namespace)
      )
    ])
    error_message = "Every browse_namespace must be \"\" or a namespace of its own for the browse service accounts: a DNS label, not default or kube-*."
  }
}

variable "grants" {
  description = <<-EOT
    One Vault role per entry, named by its key (the vault_role of the bastion's grants). For
    each: the clusters it exists on, the exact namespaces it may issue credentials for (names,
    never "*" or a pattern: Vault's list is the hard limit whatever the bastion's policy says),
    and the debug modes it allows: "ephemeral" (a container added to the pod), "copy" (a copy
    of the pod) and "pod" (a toolbox pod). copy and pod let the credential create and delete
    pods in those namespaces; ephemeral alone does not.
  EOT
  type = map(object({
    clusters   = list(string)
    namespaces = list(string)
    modes      = list(string)
  }))

  validation {
    condition     = alltrue([for name in keys(var.grants) : can(regex("^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$", name))])
    error_message = "Every grant's key is a Vault role name: letters, digits, '_', '.' and '-', at most 63 characters."
  }
  validation {
    condition     = alltrue([for grant in values(var.grants) : length(grant.clusters) > 0 && length(grant.namespaces) > 0 && length(grant.modes) > 0])
    error_message = "Every grant needs at least one cluster, one namespace and one mode."
  }
  validation {
    condition = alltrue(flatten([
      for grant in values(var.grants) : [
        for namespace in grant.namespaces : can(regex("^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$", namespace))
      ]
    ]))
    error_message = "Every namespace of a grant must be a namespace name (a DNS label): never \"*\", a glob or a selector."
  }
  validation {
    condition = alltrue(flatten([
      for grant in values(var.grants) : [
        for namespace in grant.namespaces : !contains(["kube-system", "kube-public", "kube-node-lease"], namespace)
      ]
    ]))
    error_message = "No grant may name kube-system, kube-public or kube-node-lease: debugging there is cluster administration, and the kubernetes module would label them for the restricted Pod Security level."
  }
  validation {
    condition = alltrue(flatten([
      for grant in values(var.grants) : [for mode in grant.modes : contains(["copy", "ephemeral", "pod"], mode)]
    ]))
    error_message = "A grant's modes are \"ephemeral\", \"copy\" and \"pod\"."
  }
}

variable "mount_prefix" {
  description = "Each cluster's Kubernetes secrets engine is mounted at <mount_prefix><cluster name> (the cluster's vault_mount in the bastion's config)."
  type        = string
  default     = "kubernetes-"

  validation {
    condition     = can(regex("^([A-Za-z0-9][A-Za-z0-9_.-]*)?$", var.mount_prefix))
    error_message = "The mount_prefix must be empty (the mount is the cluster's name) or start with a letter or digit and hold only letters, digits, '_', '.' and '-' (the bastion refuses other mount names)."
  }
}

variable "browse_role_name" {
  description = "The name of the console's read-only Vault role on every cluster with a browse_namespace (the cluster's browse_vault_role in the bastion's config)."
  type        = string
  default     = "bastion-browse"

  validation {
    condition     = can(regex("^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$", var.browse_role_name))
    error_message = "The browse_role_name must be a Vault role name: letters, digits, '_', '.' and '-', at most 63 characters."
  }
}

variable "reserved_namespaces" {
  description = "Namespaces no grant and no browse_namespace may name, such as the one holding the secrets engine's own token Secret (a pod created there could mount it)."
  type        = list(string)
  default     = []
}

variable "token_default_ttl" {
  description = "Seconds a Kubernetes token lives when the request names no TTL (the bastion always names one). Kubernetes refuses service-account tokens shorter than 600 s."
  type        = number
  default     = 600

  validation {
    condition     = var.token_default_ttl >= 600 && var.token_default_ttl <= 43200 && floor(var.token_default_ttl) == var.token_default_ttl
    error_message = "The token_default_ttl must be a whole number of seconds from 600 (Kubernetes' minimum) to 43200 (12 hours)."
  }
}

variable "token_max_ttl" {
  description = <<-EOT
    The longest a Kubernetes token may live, in seconds, for every role not in
    token_max_ttls. The bastion asks for the whole session (the grant's max_session) up front,
    because the engine's leases cannot be renewed, and ends a session when its credential
    ends: a debug session lasts at most this long, so raise it per role with token_max_ttls
    to match the grant's max_session.
  EOT
  type        = number
  default     = 600

  validation {
    condition     = var.token_max_ttl >= 600 && var.token_max_ttl <= 43200 && floor(var.token_max_ttl) == var.token_max_ttl
    error_message = "The token_max_ttl must be a whole number of seconds from 600 (Kubernetes' minimum) to 43200 (12 hours, the bastion's default session_hard_limit)."
  }
}

variable "token_max_ttls" {
  description = "Per Vault role name (a grant's key, or browse_role_name), a token_max_ttl other than the default, in seconds: the grant's max_session, or for the browse role the bastion's session_hard_limit (shorter only means the console's credential is re-issued more often)."
  type        = map(number)
  default     = {}

  validation {
    condition     = alltrue([for ttl in values(var.token_max_ttls) : ttl >= 600 && ttl <= 43200 && floor(ttl) == ttl])
    error_message = "Every token_max_ttls value must be a whole number of seconds from 600 to 43200."
  }
}

variable "grant_scopes" {
  description = <<-EOT
    Per grant key, the scopes of the bastion's grants that use that Vault role (grants[].scopes,
    docs/introspection.md): "shell" and the read-only views "processes", "env", "files",
    "sockets" and "logs". A role's rules are its modes' plus what its views need (pods/exec for
    processes, files and sockets; pods/log for logs). A grant not named here has the shell only.
  EOT
  type        = map(list(string))
  default     = {}

  validation {
    condition = alltrue(flatten([
      for scopes in values(var.grant_scopes) : [for scope in scopes : contains(["shell", "processes", "env", "files", "sockets", "logs"], scope)]
    ]))
    error_message = "A grant's scopes are \"shell\", \"processes\", \"env\", \"files\", \"sockets\" and \"logs\"."
  }
}
