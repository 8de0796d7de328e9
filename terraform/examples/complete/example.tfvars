# terraform apply -var-file=example.tfvars (after editing): the example config of the bastion
# (bastion/examples/bastion.yaml) for its prod-eu cluster.
vault_address      = "https://vault.example.com:8200"
vault_ca_cert_file = "/etc/ssl/vault-ca.pem"
kube_context       = "prod-eu-admin"
cluster_name       = "prod-eu"
kubernetes_host    = "https://prod-eu.k8s.example.com:6443"
browse_namespace   = "bastion-system"
bastion_cidrs      = ["192.0.2.10/32", "192.0.2.11/32"]

grants = {
  # The bastion's grant oncall-payments (namespaces payments, payments-*) names vault_role
  # debug-payments: here its namespaces are listed one by one, as they exist.
  debug-payments = {
    clusters   = ["prod-eu"]
    namespaces = ["payments", "payments-batch", "payments-api"]
    modes      = ["ephemeral"]
  }
}

token_max_ttls = {
  debug-payments = 1800  # the grant's max_session: 30m
  bastion-browse = 43200 # the bastion's session_hard_limit: 12h
}
