variable "clusters" {
  description = <<-EOT
    The clusters the bastion debugs, keyed by the name the bastion's config gives them. For
    each: the API server URL Vault's Kubernetes secrets engine calls (https://), the PEM CA
    that signed the API server's certificate (pinned: the engine trusts nothing else), and
    browse_namespace, where Vault creates the console's read-only service accounts ("" for no
    browse role: the console then cannot list that cluster).
  EOT
  type = map(object({
    kubernetes_host    = string
    kubernetes_ca_cert = string
    browse_namespace   = string
  }))

  validation {
    condition     = alltrue([for cluster in values(var.clusters) : can(regex("^https://[^/]+", cluster.kubernetes_host))])
    error_message = "Every kubernetes_host must be an https:// URL: the engine sends its service account's token there."
  }
  validation {
    condition     = alltrue([for cluster in values(var.clusters) : length(regexall("-----BEGIN CERTIFICATE-----", cluster.kubernetes_ca_cert)) > 0])
    error_message = "Every kubernetes_ca_cert must be the PEM CA certificate of the cluster's API server; without it Vault would trust the host's CA set."
  }
}

variable "service_account_jwts" {
  description = "Per cluster (the keys of clusters), the token of the service account the secrets engine acts as: the kubernetes module's engine_service_account_token output. It lands in Vault's storage and in the Terraform state: keep the state encrypted and access-controlled."
  type        = map(string)
  sensitive   = true
}

variable "grants" {
  description = <<-EOT
    One Vault role per entry, named by its key (the vault_role of the bastion's grants): the
    clusters it exists on, the exact namespaces it may issue credentials for (never "*"), and
    the debug modes it allows ("ephemeral", "copy", "pod"). The rules come from
    bastion/kube_permissions.py through the permissions module; see its variables for the
    checks.
  EOT
  type = map(object({
    clusters   = list(string)
    namespaces = list(string)
    modes      = list(string)
  }))
}

variable "mount_prefix" {
  description = "Each cluster's secrets engine is mounted at <mount_prefix><cluster name> (the cluster's vault_mount in the bastion's config)."
  type        = string
  default     = "kubernetes-"
}

variable "browse_role_name" {
  description = "The console's read-only Vault role on every cluster with a browse_namespace (the cluster's browse_vault_role in the bastion's config)."
  type        = string
  default     = "bastion-browse"
}

variable "token_default_ttl" {
  description = "Seconds a Kubernetes token lives when the request names no TTL (at least 600: Kubernetes' minimum)."
  type        = number
  default     = 600
}

variable "token_max_ttl" {
  description = "The longest a Kubernetes token may live, in seconds, for roles not in token_max_ttls. A debug session ends when its credential does: see token_max_ttls."
  type        = number
  default     = 600
}

variable "token_max_ttls" {
  description = "Per Vault role name, a longer token_max_ttl in seconds: set it to the grant's max_session (and for the browse role to the bastion's session_hard_limit)."
  type        = map(number)
  default     = {}
}

variable "bastion_cidrs" {
  description = "The addresses the bastion hosts reach Vault from (CIDRs, e.g. 192.0.2.10/32): the only sources that may log in with the AppRole's secret-id or the certificate, or use the token they get."
  type        = list(string)

  validation {
    condition     = length(var.bastion_cidrs) > 0 && alltrue([for cidr in var.bastion_cidrs : can(cidrhost(cidr, 0))])
    error_message = "The bastion_cidrs must list at least one CIDR, such as 192.0.2.10/32."
  }
  validation {
    condition = alltrue([
      for cidr in var.bastion_cidrs :
      tonumber(element(split("/", cidr), 1)) >= (length(regexall(":", cidr)) > 0 ? 64 : 24)
    ])
    error_message = "The bastion_cidrs must name the bastion hosts: IPv4 prefixes of /24 or longer, IPv6 of /64 or longer."
  }
}

variable "policy_name" {
  description = "The name of the bastion's Vault policy."
  type        = string
  default     = "bastion"
}

variable "approle_role_name" {
  description = "The bastion's AppRole role (auth/approle/role/<name>); its role_id goes into the bastion's config, vault.approle.role_id."
  type        = string
  default     = "bastion"
}

variable "create_approle_backend" {
  description = "Enable the AppRole auth method at auth/approle (the path the bastion logs in at). false when it is already enabled."
  type        = bool
  default     = true
}

variable "token_period" {
  description = "The bastion's token is periodic: renewed every period for as long as the bastion runs, never replaced at a max TTL (a session's credential dies with the token that asked for it). Seconds."
  type        = number
  default     = 3600

  validation {
    condition     = var.token_period >= 600 && var.token_period <= 86400
    error_message = "The token_period must be from 600 to 86400 seconds."
  }
}

variable "secret_id_ttl" {
  description = "Seconds an AppRole secret-id stays valid. The bastion reads its secret-id file at each login, so a rotated one takes effect without a restart; rotate well within this."
  type        = number
  default     = 86400

  validation {
    condition     = var.secret_id_ttl >= 600 && var.secret_id_ttl <= 604800
    error_message = "The secret_id_ttl must be from 600 seconds to 7 days: a secret-id that never expires is a standing credential."
  }
}

variable "secret_id_num_uses" {
  description = "Logins one secret-id allows. Each bastion worker process logs in once at start and again only after its token was lost (Vault down for longer than token_period, or the token revoked)."
  type        = number
  default     = 20

  validation {
    condition     = var.secret_id_num_uses >= 1 && var.secret_id_num_uses <= 1000
    error_message = "The secret_id_num_uses must be from 1 to 1000: 0 would mean unlimited."
  }
}

variable "tls_client_ca_pem" {
  description = "The PEM CA that issues the bastion's TLS client certificate, to log in with Vault's cert auth method instead of AppRole (vault.tls_client in the bastion's config). \"\": no certificate login."
  type        = string
  default     = ""

  validation {
    condition     = var.tls_client_ca_pem == "" || length(regexall("-----BEGIN CERTIFICATE-----", var.tls_client_ca_pem)) > 0
    error_message = "The tls_client_ca_pem must be \"\" or a PEM CA certificate."
  }
}

variable "tls_client_common_names" {
  description = "The common names the cert role accepts from that CA (a CA may issue other certificates too)."
  type        = list(string)
  default     = []
}

variable "cert_role_name" {
  description = "The cert auth role (auth/cert/certs/<name>): vault.tls_client.role in the bastion's config."
  type        = string
  default     = "bastion"
}

variable "create_cert_backend" {
  description = "Enable the cert auth method at auth/cert when tls_client_ca_pem is set. false when it is already enabled."
  type        = bool
  default     = true
}

variable "enable_audit_device" {
  description = "Enable a file audit device through the API (HashiCorp Vault). Every credential the bastion asks for must leave a trace in Vault too: false only when Vault already has one, or with OpenBao, which refuses API audit devices (put terraform/openbao/audit.hcl into its server configuration instead)."
  type        = bool
  default     = true
}

variable "audit_device_path" {
  description = "Where the file audit device is mounted (sys/audit/<path>)."
  type        = string
  default     = "file"
}

variable "audit_file_path" {
  description = "The file on the Vault servers the audit device writes to (mode 0600)."
  type        = string
  default     = "/var/log/vault/audit.log"
}

variable "grant_scopes" {
  description = "Per grant key, the scopes of the bastion's grants using that Vault role (grants[].scopes: \"shell\", \"processes\", \"env\", \"files\", \"sockets\", \"logs\"); the views add pods/exec and pods/log to the role's rules. A grant not named here has the shell only (docs/introspection.md)."
  type        = map(list(string))
  default     = {}
}
