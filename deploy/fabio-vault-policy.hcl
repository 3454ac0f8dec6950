# Vault policy for Fabio's own token (VAULT_TOKEN in Fabio's environment), so that its Vault
# certificate source (proxy.cs = cs=vault-certs;type=vault;cert=secret/fabio/certs) can serve the
# certificates consul-acme writes. Read and list only: Fabio never writes.
# Computed by fabioVaultRules() in src/deploy-contract.ts; checked by test/unit/deploy-agreement.test.ts.
# Fabio also calls auth/token/lookup-self, renew-self and sys/wrapping/unwrap, which Vault's
# "default" policy allows: attach this policy together with "default".
#
#   vault policy write fabio-certs deploy/fabio-vault-policy.hcl

# Fabio lists the certificate secrets (KV v2: metadata/, LIST is checked with a trailing slash).
path "secret/metadata/fabio/certs/" {
  capabilities = ["list"]
}

# ...and reads each one's cert and key fields (KV v2: data/).
path "secret/data/fabio/certs/*" {
  capabilities = ["read"]
}
