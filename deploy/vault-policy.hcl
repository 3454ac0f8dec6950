# Vault policy for consul-acme (CONSUL_ACME_STORE=vault), KV v2 mount "secret", certificates under
# "fabio/certs" (Fabio's cert=secret/fabio/certs), ACME account under "consul-acme/accounts",
# pending orders under "consul-acme/pending".
# Exactly the paths computed by serviceVaultRules() in src/deploy-contract.ts and checked by
# test/unit/deploy-agreement.test.ts. No sudo, no wildcard wider than the prefixes.
#
#   vault policy write consul-acme deploy/vault-policy.hcl
#
# If you change CONSUL_ACME_VAULT_MOUNT, CONSUL_ACME_VAULT_PREFIX, CONSUL_ACME_VAULT_ACCOUNT_PATH or
# CONSUL_ACME_VAULT_PENDING_PATH, change the paths below too.

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

# Pending orders: before finalizing an order, its URL and the certificate's private key are written
# here (check-and-set), so an instance can complete it after a crash or a Vault outage by downloading
# the certificate instead of ordering again. Outside the prefix Fabio reads.
path "secret/data/consul-acme/pending/*" {
  capabilities = ["create", "read", "update"]
}

# Listing the pending orders (the slash as for the certificates' list rule above).
path "secret/metadata/consul-acme/pending/" {
  capabilities = ["list"]
}

# Once the certificate is stored, the pending order is deleted with every version: it holds a key.
path "secret/metadata/consul-acme/pending/*" {
  capabilities = ["delete"]
}

# The token itself: its ttl is looked up and a renewable token is renewed before it expires
# (Nomad renews it too; this covers tokens that reach the file another way, e.g. Vault Agent).
# Vault's "default" policy grants these three; they are here for roles made with
# token_no_default_policy.
path "auth/token/lookup-self" {
  capabilities = ["read"]
}

path "auth/token/renew-self" {
  capabilities = ["update"]
}

# The start-up self-check asks what the token may do on each path above, writing nothing.
path "sys/capabilities-self" {
  capabilities = ["update"]
}
