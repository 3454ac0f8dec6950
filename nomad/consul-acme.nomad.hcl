# consul-acme: ACME (Let's Encrypt) certificates for the hostnames Consul services declare,
# written to Vault KV v2 where Fabio's Vault certificate source reads them.
#
# Service registration (one clean design, no double registration):
#   * The PROCESS registers itself in the local Consul agent as service "consul-acme"
#     (CONSUL_ACME_REGISTER_SERVICE=true, id "consul-acme-<alloc id>"), on the challenge port, with
#     one `urlprefix-<host>/.well-known/acme-challenge/` tag per managed hostname and its own HTTP
#     check on /health/ready of the admin port. Only the process knows the managed hostnames, so
#     only it can keep those tags in step; this is the ONE registration per instance Fabio routes to.
#   * NOMAD registers a second, differently named service "consul-acme-admin" on the admin port
#     (in the task, so check_restart applies) with NO Fabio tags, so Fabio builds no route from
#     it. Its checks are what `update` and `check_restart` watch: deployments wait for /health/ready, a wedged process is restarted on
#     /health/live. A Nomad `service "consul-acme"` would double-register the instance (once with
#     route tags, once without) and must not be added.
#
# Networking: group network mode "host" with dynamic ports. The process uses one value both to
# listen and to advertise (CONSUL_ACME_CHALLENGE_PORT is the port it binds AND the port it
# registers), which is only true when the port inside the task equals the port on the node: that is
# the case in host mode (the docker driver maps the dynamic port to the same port in the
# container). In bridge mode NOMAD_PORT_* is the container-side port and the registration would
# advertise a port Fabio cannot reach; bridge mode also needs CNI plugins, which buy nothing here.
#
# Secrets, as files that may change under the running task (no restart, no outage):
#   * Vault via workload identity (Nomad 1.7+): Nomad writes the task's token to
#     secrets/vault_token, renews it, and writes a new one there when it must replace it
#     (change_mode "noop": the task is not restarted). The process reads VAULT_TOKEN_FILE, polls
#     it every 2 s and re-reads it before a refused request fails. The role's token policy is
#     deploy/vault-policy.hcl.
#   * Consul: a template renders the token from the Nomad variable nomad/jobs/consul-acme (item
#     consul_token) to secrets/consul_token, again with change_mode "noop"; the process reads
#     CONSUL_HTTP_TOKEN_FILE the same way, and registers its services again with a new token. The
#     token carries deploy/consul-policy.hcl:
#       nomad var put nomad/jobs/consul-acme consul_token=<secret id>
#     To rotate it: create the new token, put it in the variable, wait for `token_changed` in the
#     logs of every allocation (seconds), then delete the old token (docs/operations.md).
# Before it says ready, each instance checks that both tokens have every permission it needs, so a
# policy missing a rule fails the deployment and auto_revert rolls it back.

variable "datacenters" {
  type        = list(string)
  default     = ["dc1"]
  description = "Datacenters to run in."
}

variable "count" {
  type        = number
  default     = 2
  description = "Instances. Any instance answers any challenge (tokens are in Consul KV); locks keep them from ordering the same certificate twice."
}

variable "image" {
  type        = string
  default     = "consul-acme:0.1.0"
  description = "Container image built from deploy/Dockerfile."
}

variable "acme_directory" {
  type        = string
  default     = "letsencrypt-staging"
  description = "ACME directory URL, letsencrypt-staging or letsencrypt-production. Switch to production once staging certificates appear in Vault."
}

variable "acme_email" {
  type        = string
  default     = ""
  description = "Contact address of the ACME account, for the CA's notices about the account (policy changes, certificates it must revoke); empty for none. Let's Encrypt sends no expiry e-mails since 2025-06-04: watch the consul-acme-certificates check and consul_acme_certificate_expiry_timestamp_seconds. Let's Encrypt refuses example.com addresses."
}

variable "consul_kv_prefix" {
  type        = string
  default     = "consul-acme/"
  description = "Consul KV prefix for challenges and locks; must match key_prefix in deploy/consul-policy.hcl."
}

variable "vault_addr" {
  type        = string
  default     = "https://vault.service.consul:8200"
  description = "Vault address (Nomad writes the token to secrets/vault_token, not the address)."
}

variable "vault_role" {
  type        = string
  default     = "consul-acme"
  description = "Vault JWT auth role for the workload identity; its token_policies include the policy from deploy/vault-policy.hcl."
}

variable "vault_mount" {
  type        = string
  default     = "secret"
  description = "KV v2 mount; must match deploy/vault-policy.hcl and Fabio's proxy.cs."
}

variable "vault_prefix" {
  type        = string
  default     = "fabio/certs"
  description = "Path under the mount Fabio lists (cert=<mount>/<prefix>); must match deploy/vault-policy.hcl."
}

variable "vault_account_path" {
  type        = string
  default     = "consul-acme/accounts"
  description = "Path under the mount for the ACME account key, outside the Fabio prefix."
}

variable "vault_pending_path" {
  type        = string
  default     = "consul-acme/pending"
  description = "Path under the mount for orders awaiting their certificate (with their private keys), outside the Fabio prefix; must match deploy/vault-policy.hcl."
}

variable "log_level" {
  type        = string
  default     = "info"
  description = "fatal, error, warn, info, debug, trace or silent."
}

# Sized from `npm run bench` (docs/operations.md, "Resource sizing"): idle 1-2 % of a core from 100
# to 10,000 names (~25-50 MHz), ~26-33 ms of CPU per certificate issued; peak RSS ~135 MiB issuing 100
# certificates, up to ~210 MiB holding 10,000 names. cpu is a share, so issuance bursts use spare
# CPU above it; memory is a hard limit.
variable "cpu" {
  type        = number
  default     = 200
  description = "CPU in MHz (idle ~25-50 MHz; see docs/operations.md)."
}

variable "memory" {
  type        = number
  default     = 320
  description = "Memory in MiB: peak RSS measured ~135 MiB issuing 100 certificates, ~210 MiB at 10,000 names (docs/operations.md)."
}

job "consul-acme" {
  type        = "service"
  datacenters = var.datacenters

  update {
    max_parallel      = 1
    health_check      = "checks"
    min_healthy_time  = "20s"
    healthy_deadline  = "3m"
    progress_deadline = "10m"
    auto_revert       = true
  }

  group "consul-acme" {
    count = var.count

    # Prefer different nodes, so losing one node leaves an instance to answer challenges.
    spread {
      attribute = "${node.unique.id}"
    }

    network {
      mode = "host"
      port "challenge" {}
      port "admin" {}
    }

    restart {
      attempts = 3
      interval = "5m"
      delay    = "15s"
      mode     = "delay"
    }

    reschedule {
      delay          = "30s"
      delay_function = "exponential"
      max_delay      = "10m"
      unlimited      = true
    }

    task "consul-acme" {
      driver = "docker"

      config {
        image = var.image
        ports = ["challenge", "admin"]
      }

      # Longer than CONSUL_ACME_SHUTDOWN_TIMEOUT_MS (30 s), so SIGTERM can finish or abandon orders,
      # release locks and deregister before Nomad kills the task.
      kill_timeout = "40s"

      # Health only: deployments and restarts watch these checks. No Fabio tags, and not named
      # "consul-acme": the process registers that service itself (see the top of this file).
      service {
        name     = "consul-acme-admin"
        port     = "admin"
        provider = "consul"

        check {
          name     = "ready"
          type     = "http"
          path     = "/health/ready"
          interval = "10s"
          timeout  = "3s"
        }

        check {
          name     = "live"
          type     = "http"
          path     = "/health/live"
          interval = "10s"
          timeout  = "3s"

          check_restart {
            limit = 3
            grace = "60s"
          }
        }
      }

      env {
        CONSUL_ACME_CHALLENGE_PORT   = "${NOMAD_PORT_challenge}"
        CONSUL_ACME_ADMIN_PORT       = "${NOMAD_PORT_admin}"
        CONSUL_ACME_SERVICE_ADDRESS  = "${NOMAD_IP_challenge}"
        CONSUL_ACME_INSTANCE_NAME    = "${NOMAD_ALLOC_ID}"
        CONSUL_ACME_REGISTER_SERVICE = "true"

        # The node's own agent: service registrations and sessions belong to the local agent.
        # Its HTTP API must listen on the node's address (client_addr), not only on 127.0.0.1.
        # With TLS: https://...:8501 and CONSUL_CACERT.
        CONSUL_HTTP_ADDR      = "http://${attr.unique.network.ip-address}:8500"
        CONSUL_ACME_KV_PREFIX = var.consul_kv_prefix
        # Written by the template below; re-read when it changes.
        CONSUL_HTTP_TOKEN_FILE = "${NOMAD_SECRETS_DIR}/consul_token"

        CONSUL_ACME_DIRECTORY_URL = var.acme_directory
        CONSUL_ACME_EMAIL         = var.acme_email

        CONSUL_ACME_STORE              = "vault"
        VAULT_ADDR                     = var.vault_addr
        # Written, renewed and replaced by Nomad (the vault block below); re-read when it changes.
        VAULT_TOKEN_FILE               = "${NOMAD_SECRETS_DIR}/vault_token"
        CONSUL_ACME_VAULT_MOUNT        = var.vault_mount
        CONSUL_ACME_VAULT_PREFIX       = var.vault_prefix
        CONSUL_ACME_VAULT_ACCOUNT_PATH = var.vault_account_path
        CONSUL_ACME_VAULT_PENDING_PATH = var.vault_pending_path

        CONSUL_ACME_LOG_LEVEL = var.log_level
      }

      # Workload identity (Nomad 1.7+): Nomad logs in to Vault's JWT auth method with the task's
      # identity and writes the token to secrets/vault_token (the file is on by default). No
      # VAULT_TOKEN in the environment: it would go stale when Nomad replaces the token. A new
      # token needs no restart, the process picks the file up.
      vault {
        role        = var.vault_role
        env         = false
        change_mode = "noop"
      }
      # Older clusters (Nomad < 1.7, token-based integration, deprecated): the same, with
      #   policies = ["consul-acme"]   instead of role.

      # Consul token from a Nomad variable, as a file. Alternative with Vault's Consul secrets
      # engine (the Vault role also needs read on consul/creds/consul-acme):
      #   data = "{{ with secret \"consul/creds/consul-acme\" }}{{ .Data.token }}{{ end }}"
      template {
        data        = "{{ with nomadVar \"nomad/jobs/consul-acme\" }}{{ .consul_token }}{{ end }}"
        destination = "secrets/consul_token"
        change_mode = "noop"
      }

      # sized from measurements: see docs/operations.md
      resources {
        cpu    = var.cpu
        memory = var.memory
      }

      logs {
        max_files     = 5
        max_file_size = 10
      }
    }
  }
}
