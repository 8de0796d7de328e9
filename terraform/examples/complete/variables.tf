variable "vault_address" {
  description = "Vault's (or OpenBao's) address, https:// (the bastion's vault.address)."
  type        = string

  validation {
    condition     = can(regex("^https://[^/]+", var.vault_address))
    error_message = "The vault_address must be an https:// URL."
  }
}

variable "vault_ca_cert_file" {
  description = "The CA file that signed Vault's certificate (the bastion's vault.ca_file)."
  type        = string
}

variable "kubeconfig_path" {
  description = "The administrator's kubeconfig, used by Terraform only (the bastion never gets one)."
  type        = string
  default     = "~/.kube/config"
}

variable "kube_context" {
  description = "The kubeconfig context of the cluster to provision."
  type        = string
}

variable "cluster_name" {
  description = "The cluster's name in the bastion's config (clusters[].name); its Vault mount is kubernetes-<name>."
  type        = string
}

variable "kubernetes_host" {
  description = "The cluster's API server URL as Vault reaches it (https://)."
  type        = string
}

variable "kubernetes_ca_cert_file" {
  description = "A PEM file with the CA of the API server's certificate, when it is not the cluster's own root CA (kube-root-ca); \"\": use that root CA."
  type        = string
  default     = ""
}

variable "browse_namespace" {
  description = "The namespace created for the console's read-only service accounts, or \"\" for no browse role (the console then cannot list the cluster)."
  type        = string
  default     = "bastion-browse"
}

variable "grants" {
  description = "One Vault role per key (the grants' vault_role in the bastion's config): clusters (this cluster_name), the exact namespaces (never \"*\"), and modes among \"ephemeral\", \"copy\", \"pod\"."
  type = map(object({
    clusters   = list(string)
    namespaces = list(string)
    modes      = list(string)
  }))
}

variable "token_max_ttls" {
  description = "Per Vault role, the longest a Kubernetes token may live in seconds (default 600): the grant's max_session, and for the browse role the bastion's session_hard_limit."
  type        = map(number)
  default     = {}
}

variable "bastion_cidrs" {
  description = "The addresses the bastion hosts reach Vault from (e.g. [\"192.0.2.10/32\"]): the only sources that may log in as the bastion."
  type        = list(string)
}

variable "vault_audit_file_path" {
  description = "The file on the Vault servers the audit device writes to."
  type        = string
  default     = "/var/log/vault/audit.log"
}

variable "grant_scopes" {
  description = "Per grant key, the scopes of the bastion's grants using that Vault role (grants[].scopes: \"shell\", \"processes\", \"env\", \"files\", \"sockets\", \"logs\"); the views add pods/exec and pods/log to the role's rules. A grant not named here has the shell only (docs/introspection.md)."
  type        = map(list(string))
  default     = {}
}
