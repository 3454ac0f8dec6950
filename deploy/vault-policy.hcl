# Vault policy for consul-acme (CONSUL_ACME_STORE=vault), KV v2 mount "secret", certificates under
# "fabio/certs" (Fabio's cert=secret/fabio/certs), ACME account under "consul-acme/accounts".
# Exactly the paths computed by storeVaultRules() in src/deploy-contract.ts and checked by
# test/unit/deploy-agreement.test.ts. No sudo, no wildcard wider than the prefixes.
#
#   vault policy write consul-acme deploy/vault-policy.hcl
#
# If you change CONSUL_ACME_VAULT_MOUNT, CONSUL_ACME_VAULT_PREFIX or CONSUL_ACME_VAULT_ACCOUNT_PATH,
# change the paths below too.

# Certificates: read (and read back a written version), check-and-set writes.
path "secret/data/fabio/certs/*" {
  capabilities = ["create", "read", "update"]
}

# The renewal scan lists the certificates. Vault checks a LIST against the path with a trailing
# slash, so the rule is written with one.
path "secret/metadata/fabio/certs/" {
  capabilities = ["list"]
}

# Retiring a certificate deletes its metadata, i.e. every version of the secret.
path "secret/metadata/fabio/certs/*" {
  capabilities = ["read", "delete"]
}

# The ACME account key, shared by every instance, outside the prefix Fabio reads.
path "secret/data/consul-acme/accounts/*" {
  capabilities = ["create", "read", "update"]
}
