# Consul ACL policy for consul-acme's token (Consul 1.8 rule syntax; docs/protocols.md §1.9).
# Least privilege, as computed by consulRules() in src/deploy-contract.ts and checked by
# test/unit/deploy-agreement.test.ts.
#
#   consul acl policy create -name consul-acme -rules @deploy/consul-policy.hcl
#   consul acl token create -description "consul-acme" -policy-name consul-acme
#
# If you change CONSUL_ACME_KV_PREFIX or CONSUL_ACME_SERVICE_NAME, change the names below too.

# HTTP-01 challenge tokens (consul-acme/challenges/) and locks (consul-acme/locks/).
key_prefix "consul-acme/" {
  policy = "write"
}

# Locks are held with a session on the local agent's node.
session_prefix "" {
  policy = "write"
}

# The catalog watch reads every service's tags; catalog reads are filtered, not denied, so a
# narrower rule silently hides services (and their hostnames) instead of failing.
service_prefix "" {
  policy = "read"
}

node_prefix "" {
  policy = "read"
}

# Each instance registers itself (with the Fabio challenge-route tags and its health check)
# and deregisters on shutdown.
service "consul-acme" {
  policy = "write"
}

# Beside it, the certificate health check (warning before expiry, critical once expired), kept
# on its own service so that it never takes the instance out of Fabio's routing.
service "consul-acme-certificates" {
  policy = "write"
}
