# OpenBao (2.x) refuses to enable audit devices through its API ("use declarative,
# config-based audit device management instead"), so the vault module's vault_audit resource
# is for HashiCorp Vault only. With OpenBao, put this stanza into every server's configuration
# (the same on all of them), set the vault module's enable_audit_device = false, and restart
# or SIGHUP the servers. The options are the vault module's: tests/provisioning/
# test_terraform_live.py checks that they match and that OpenBao 2.7 accepts this file.
audit "file" "file" {
  description = "Every request and response, secrets HMAC'd"
  options {
    file_path = "/var/log/vault/audit.log"
    mode      = "0600"
    format    = "json"
    # log_raw would write the Kubernetes tokens Vault hands out, and every other secret, in
    # clear text: it stays off.
    log_raw = "false"
  }
}
