variable "cluster_name" {
  description = "The cluster this module instance provisions (one instance per cluster, each with its own kubernetes provider), by the name the bastion's config and the vault module give it."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$", var.cluster_name))
    error_message = "The cluster_name must be a DNS label, as in the bastion's config."
  }
}

variable "grants" {
  description = "The same grants as the vault module's (a role per key: clusters, namespaces, modes); only those naming cluster_name apply here. The secrets engine gets, in each of their namespaces, what it needs to hand out their rules."
  type = map(object({
    clusters   = list(string)
    namespaces = list(string)
    modes      = list(string)
  }))
}

variable "browse_namespace" {
  description = "The namespace this module creates for the console's read-only service accounts (the cluster's browse_namespace in the vault module), or \"\" for no browse role: the engine then gets no cluster-wide right at all."
  type        = string
  default     = "bastion-browse"
}

variable "engine_namespace" {
  description = "The namespace this module creates for the secrets engine's service account and its token Secret. Nothing else belongs there: a pod created in it could mount the token."
  type        = string
  default     = "vault-kubernetes-engine"

  validation {
    condition     = can(regex("^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$", var.engine_namespace)) && !contains(["default", "kube-system", "kube-public", "kube-node-lease"], var.engine_namespace)
    error_message = "The engine_namespace must be a namespace of its own: a DNS label, not default or kube-*."
  }
}

variable "engine_service_account" {
  description = "The name of the secrets engine's service account (and of its Roles and bindings)."
  type        = string
  default     = "vault-kubernetes-engine"

  validation {
    condition     = can(regex("^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$", var.engine_service_account))
    error_message = "The engine_service_account must be a DNS label."
  }
}

variable "label_debug_namespaces" {
  description = "Label the grants' namespaces (which already exist: they hold the workloads) for Pod Security Admission. The namespaces this module creates are always labelled."
  type        = bool
  default     = true
}

variable "pod_security_enforce" {
  description = "The Pod Security Admission level enforced in the labelled namespaces. The debug containers, copies and toolbox pods the bastion makes meet \"restricted\"; \"baseline\" is for namespaces whose own workloads do not yet (audit and warn stay \"restricted\")."
  type        = string
  default     = "restricted"

  validation {
    condition     = contains(["restricted", "baseline"], var.pod_security_enforce)
    error_message = "The pod_security_enforce level must be \"restricted\" or \"baseline\"."
  }
}

variable "pod_security_version" {
  description = "The Pod Security Standards version the labels pin (\"latest\", or e.g. \"v1.30\" to keep a cluster upgrade from tightening them unannounced)."
  type        = string
  default     = "latest"

  validation {
    condition     = can(regex("^(latest|v1\\.[0-9]+)$", var.pod_security_version))
    error_message = "The pod_security_version must be \"latest\" or a version such as \"v1.30\"."
  }
}

variable "grant_scopes" {
  description = "Per grant key, the scopes of the bastion's grants using that Vault role (grants[].scopes: \"shell\", \"processes\", \"env\", \"files\", \"sockets\", \"logs\"); the views add pods/exec and pods/log to the role's rules. A grant not named here has the shell only (docs/introspection.md)."
  type        = map(list(string))
  default     = {}
}
