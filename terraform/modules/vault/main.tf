# Vault (or OpenBao) for the bastion: one Kubernetes secrets engine per cluster, one role per
# grant, the console's browse role, the bastion's policy and login (AppRole, optionally a TLS
# client certificate), and an audit device. docs/provisioning.md says what each right is for.

module "permissions" {
  source = "../permissions"

  clusters          = { for name, cluster in var.clusters : name => { browse_namespace = cluster.browse_namespace } }
  grants            = var.grants
  mount_prefix      = var.mount_prefix
  browse_role_name  = var.browse_role_name
  token_default_ttl = var.token_default_ttl
  token_max_ttl     = var.token_max_ttl
  token_max_ttls    = var.token_max_ttls
  grant_scopes      = var.grant_scopes
}

resource "vault_kubernetes_secret_backend" "cluster" {
  for_each = local.checked ? var.clusters : {}

  path                = module.permissions.mounts[each.key]
  description         = "Short-lived Kubernetes credentials for the debug bastion's sessions on ${each.key}"
  kubernetes_host     = each.value.kubernetes_host
  kubernetes_ca_cert  = each.value.kubernetes_ca_cert
  service_account_jwt = var.service_account_jwts[each.key]
  # Vault may itself run in a cluster: never fall back on its own pod's token and CA, which
  # would act with another identity (or on another cluster) than the one provisioned here.
  disable_local_ca_jwt      = true
  default_lease_ttl_seconds = var.token_default_ttl
  max_lease_ttl_seconds     = module.permissions.mount_max_lease_ttls[each.key]
}

resource "vault_kubernetes_secret_backend_role" "role" {
  for_each = module.permissions.vault_roles

  backend                       = vault_kubernetes_secret_backend.cluster[each.value.cluster].path
  name                          = each.value.name
  allowed_kubernetes_namespaces = each.value.namespaces
  kubernetes_role_type          = each.value.kubernetes_role_type
  generated_role_rules          = each.value.generated_role_rules
  token_default_ttl             = each.value.token_default_ttl
  token_max_ttl                 = each.value.token_max_ttl
  extra_labels                  = module.permissions.managed_by_labels
}

resource "vault_policy" "bastion" {
  name   = var.policy_name
  policy = module.permissions.bastion_policy
}

resource "vault_auth_backend" "approle" {
  count = var.create_approle_backend ? 1 : 0

  type        = "approle"
  path        = "approle"
  description = "AppRole logins (the debug bastion's among them)"
}

resource "vault_approle_auth_backend_role" "bastion" {
  # The bastion logs in at auth/approle/login: the mount path is not a choice.
  backend   = var.create_approle_backend ? vault_auth_backend.approle[0].path : "approle"
  role_name = var.approle_role_name

  # The secret-id: short-lived, few uses, only from the bastion hosts. It is not made here
  # (it would sit in the Terraform state): docs/provisioning.md says how to issue one.
  bind_secret_id        = true
  secret_id_ttl         = var.secret_id_ttl
  secret_id_num_uses    = var.secret_id_num_uses
  secret_id_bound_cidrs = var.bastion_cidrs

  # The token: the bastion's policy only (not even Vault's default policy), usable only from
  # the bastion hosts, periodic (see token_period).
  token_policies          = [vault_policy.bastion.name]
  token_no_default_policy = true
  token_type              = "service"
  token_period            = var.token_period
  token_bound_cidrs       = var.bastion_cidrs
}

resource "vault_auth_backend" "cert" {
  count = var.tls_client_ca_pem != "" && var.create_cert_backend ? 1 : 0

  type        = "cert"
  path        = "cert"
  description = "TLS client certificate logins (the debug bastion's among them)"
}

resource "vault_cert_auth_backend_role" "bastion" {
  count = var.tls_client_ca_pem != "" ? 1 : 0

  # The bastion logs in at auth/cert/login.
  backend              = var.create_cert_backend ? vault_auth_backend.cert[0].path : "cert"
  name                 = var.cert_role_name
  certificate          = var.tls_client_ca_pem
  allowed_common_names = var.tls_client_common_names

  token_policies          = [vault_policy.bastion.name]
  token_no_default_policy = true
  token_type              = "service"
  token_period            = var.token_period
  token_bound_cidrs       = var.bastion_cidrs
}

resource "vault_audit" "file" {
  count = var.enable_audit_device ? 1 : 0

  type        = "file"
  path        = var.audit_device_path
  description = "Every request and response, secrets HMAC'd"
  options = {
    file_path = var.audit_file_path
    mode      = "0600"
    format    = "json"
    # log_raw would write the Kubernetes tokens Vault hands out, and every other secret, in
    # clear text: it stays off (Vault's default, written out so a review sees it).
    log_raw = "false"
  }
}

locals {
  # Terraform 1.0 has no preconditions: checks across variables stop the plan here (tobool of
  # a sentence fails, and its error shows the sentence).
  problems = concat(
    [
      # The clusters' names are not secret; the tokens stay marked sensitive.
      for cluster in sort(setsubtract(keys(var.clusters), nonsensitive(keys(var.service_account_jwts)))) :
      "service_account_jwts has no token for cluster ${cluster}"
    ],
    [
      for problem in ["tls_client_common_names is empty: name the certificate's common name, or any certificate the CA issues could log in"] :
      problem if var.tls_client_ca_pem != "" && length(var.tls_client_common_names) == 0
    ],
  )
  checked = length(local.problems) == 0 ? true : tobool("the vault module's inputs do not fit together: ${join("; ", local.problems)}")
}
