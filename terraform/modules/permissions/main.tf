# What the bastion and Vault's Kubernetes secrets engine may do, computed from the grants.
#
# Every Kubernetes rule comes from permissions.json, which terraform/generate_permissions.py
# writes from bastion/kube_permissions.py (the bastion's own list of what it needs). This
# module only picks rules from it by name; it never writes a verb or a resource itself. The
# vault and kubernetes modules use it and take no rules from anywhere else.

locals {
  permissions = jsondecode(file("${path.module}/permissions.json"))

  vault_name = "^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"

  mounts = { for cluster in keys(var.clusters) : cluster => "${var.mount_prefix}${cluster}" }

  # The namespaces each cluster's debug roles may issue credentials for.
  debug_namespaces = {
    for cluster in keys(var.clusters) : cluster => sort(distinct(flatten([
      for grant in values(var.grants) : grant.namespaces if contains(grant.clusters, cluster)
    ])))
  }

  # Terraform 1.0 has no preconditions, and a variable's validation sees only that variable:
  # the checks across variables are collected here and stop the plan below.
  problems = concat(
    [
      for name, grant in var.grants :
      "grant ${name} names clusters that are not in clusters: ${join(", ", sort(setsubtract(grant.clusters, keys(var.clusters))))}"
      if length(setsubtract(grant.clusters, keys(var.clusters))) > 0
    ],
    [
      for name, grant in var.grants :
      "grant ${name} names reserved namespaces: ${join(", ", sort(setintersection(grant.namespaces, var.reserved_namespaces)))}"
      if length(setintersection(grant.namespaces, var.reserved_namespaces)) > 0
    ],
    [
      for cluster, mount in local.mounts :
      "the mount ${mount} of cluster ${cluster} is not a name the bastion accepts (at most 63 characters): shorten mount_prefix or the cluster's name"
      if !can(regex(local.vault_name, mount))
    ],
    [
      for cluster, settings in var.clusters :
      "cluster ${cluster}: browse_namespace ${settings.browse_namespace} is a debug namespace too; give the browse service accounts a namespace of their own, or a debug there could run pods as them"
      if settings.browse_namespace != "" && contains(local.debug_namespaces[cluster], settings.browse_namespace)
    ],
    [
      for cluster, settings in var.clusters :
      "cluster ${cluster}: browse_namespace ${settings.browse_namespace} is reserved"
      if contains(var.reserved_namespaces, settings.browse_namespace)
    ],
    [
      for name in sort(setsubtract(keys(var.grant_scopes), keys(var.grants))) :
      "grant_scopes names ${name}, which is not a grant"
    ],
    [
      for name in sort(setsubtract(keys(var.token_max_ttls), concat(keys(var.grants), [var.browse_role_name]))) :
      "token_max_ttls names ${name}, which is neither a grant nor the browse role"
    ],
    [
      for name, ttl in var.token_max_ttls :
      "token_max_ttls gives ${name} ${ttl} s, less than token_default_ttl (${var.token_default_ttl} s)"
      if ttl < var.token_default_ttl
    ],
    [
      for problem in ["token_max_ttl (${var.token_max_ttl} s) is less than token_default_ttl (${var.token_default_ttl} s)"] :
      problem if var.token_max_ttl < var.token_default_ttl
    ],
    [
      for name, grant in var.grants :
      "grant ${name} has the name of the browse role (${var.browse_role_name}); rename one of them"
      if name == var.browse_role_name && anytrue([for cluster in grant.clusters : lookup(var.clusters, cluster, { browse_namespace = "" }).browse_namespace != ""])
    ],
  )
  # tobool of a sentence fails, and its error shows the sentence.
  checked = length(local.problems) == 0 ? true : tobool("the grants and clusters do not fit together: ${join("; ", local.problems)}")

  # What each grant's views add to its modes' rules (none for a grant with the shell only).
  view_rules = {
    for name in keys(var.grants) : name => distinct(flatten([
      for scope in local.permissions.scopes : local.permissions.scope_rules[scope]
      if contains(lookup(var.grant_scopes, name, ["shell"]), scope)
    ]))
  }

  # One Vault role per grant and cluster, keyed "<cluster>/<role>".
  debug_roles = {
    for role in flatten([
      for name, grant in var.grants : [
        for cluster in grant.clusters : {
          key        = "${cluster}/${name}"
          cluster    = cluster
          name       = name
          namespaces = sort(distinct(grant.namespaces))
          modes      = sort(distinct(grant.modes))
        }
      ]
    ]) : role.key => role if local.checked
  }

  vault_roles = merge(
    {
      for key, role in local.debug_roles : key => {
        cluster              = role.cluster
        mount                = local.mounts[role.cluster]
        name                 = role.name
        namespaces           = tolist(role.namespaces)
        kubernetes_role_type = "Role"
        token_default_ttl    = var.token_default_ttl
        token_max_ttl        = lookup(var.token_max_ttls, role.name, var.token_max_ttl)
        rules                = concat(local.permissions.session_rules[join(",", role.modes)], local.view_rules[role.name])
        # What Vault's generated_role_rules takes (JSON or YAML of {"rules": [...]}).
        generated_role_rules = jsonencode({ rules = concat(local.permissions.session_rules[join(",", role.modes)], local.view_rules[role.name]) })
        # The request fields the bastion sends to this role's creds path (bastion/vault.py).
        creds_parameters = ["kubernetes_namespace", "ttl"]
      }
    },
    {
      for cluster, settings in var.clusters : "${cluster}/${var.browse_role_name}" => {
        cluster              = cluster
        mount                = local.mounts[cluster]
        name                 = var.browse_role_name
        namespaces           = tolist([settings.browse_namespace])
        kubernetes_role_type = "ClusterRole"
        token_default_ttl    = var.token_default_ttl
        token_max_ttl        = lookup(var.token_max_ttls, var.browse_role_name, var.token_max_ttl)
        rules                = local.permissions.browse_rules
        generated_role_rules = jsonencode({ rules = local.permissions.browse_rules })
        creds_parameters     = ["cluster_role_binding", "kubernetes_namespace", "ttl"]
      } if settings.browse_namespace != "" && local.checked
    },
  )

  # A mount caps every lease of its roles too: at the longest of them, so a role changed
  # later by hand cannot outlive what was reviewed here.
  mount_max_lease_ttls = {
    for cluster in keys(var.clusters) : cluster => max(var.token_max_ttl, [
      for role in values(local.vault_roles) : role.token_max_ttl if role.cluster == cluster
    ]...)
  }

  # Leases the bastion may renew and revoke: those of its own mounts' credentials.
  lease_patterns = sort([for mount in values(local.mounts) : "${mount}/creds/*"])

  # The bastion's Vault policy: exactly the paths bastion/vault.py calls (docs/vault.md), in
  # Vault's JSON policy syntax. allowed_parameters refuses any other request field (e.g.
  # "audiences", which would mint tokens for other relying parties) and any lease that is
  # not one of the bastion's own.
  bastion_policy = jsonencode({
    path = merge(
      {
        for key, role in local.vault_roles : "${role.mount}/creds/${role.name}" => {
          capabilities       = ["update"]
          allowed_parameters = { for parameter in role.creds_parameters : parameter => [] }
        }
      },
      {
        "sys/leases/renew" = {
          capabilities       = ["update"]
          allowed_parameters = { lease_id = local.lease_patterns, increment = [] }
        }
        "sys/leases/revoke" = {
          capabilities       = ["update"]
          allowed_parameters = { lease_id = local.lease_patterns, sync = [] }
        }
        "auth/token/renew-self"  = { capabilities = ["update"] }
        "auth/token/lookup-self" = { capabilities = ["read"] }
      },
    )
  })

  # What the secrets engine's own identity needs in each cluster. It holds every rule it
  # hands out (Kubernetes refuses to let it create a Role or binding granting more than it
  # has), so in a namespace it gets the union of the rules of the grants covering it.
  engine_namespace_rules = {
    for cluster, namespaces in local.debug_namespaces : cluster => {
      for namespace in namespaces : namespace => concat(
        local.permissions.engine_account_rules,
        local.permissions.engine_role_rules,
        local.permissions.session_rules[join(",", sort(distinct(flatten([
          for grant in values(var.grants) : grant.modes
          if contains(grant.clusters, cluster) && contains(grant.namespaces, namespace)
        ]))))],
        distinct(flatten([
          for name, grant in var.grants : local.view_rules[name]
          if contains(grant.clusters, cluster) && contains(grant.namespaces, namespace)
        ])),
      )
    } if local.checked
  }
  engine_browse_rules = {
    for cluster, settings in var.clusters : cluster => {
      namespace = settings.browse_namespace
      # In the browse namespace: its service accounts and their tokens only.
      namespace_rules = local.permissions.engine_account_rules
      # Cluster-wide: create and delete the ClusterRole and its binding, and hold what the
      # ClusterRole grants.
      cluster_rules = concat(local.permissions.engine_cluster_role_rules, local.permissions.browse_rules)
    } if settings.browse_namespace != "" && local.checked
  }
}
