# consul-acme in sink-only mode (CONSUL_ACME_MODE=sinks): one instance on every node that runs
# HAProxy, keeping HAProxy's certificates in step with what the issuing instances
# (nomad/consul-acme.nomad.hcl, placed anywhere) write to Vault.
#
# What it does: reads the certificates from Vault, writes HAProxy's PEM files and crt-list on the
# node and pushes each change through HAProxy's runtime API (no reload). It re-syncs at start and
# every CONSUL_ACME_SINK_RESYNC_INTERVAL (renewals arrive this way), and lists Vault every
# CONSUL_ACME_SINK_POLL_INTERVAL (new and removed names arrive this way).
# What it does not do: issue, answer challenges, take locks, watch the catalog, register itself.
# It never talks to Consul, so it needs no Consul token.
#
# Vault: it only lists and reads under the certificate prefix, exactly what Fabio's own token may
# do, so its JWT auth role's token_policies is the policy in deploy/fabio-vault-policy.hcl (plus
# "default"), never deploy/vault-policy.hcl:
#   vault write auth/jwt-nomad/role/consul-acme-sinks ... token_policies=fabio-certs,default
#
# The node: HAProxy's crt-list folder and its admin socket's folder are Nomad host volumes, writable
# by the container's user (node, uid 1000), e.g. in the Nomad client's configuration:
#   client {
#     host_volume "haproxy-certs" { path = "/etc/haproxy/consul-acme" }
#     host_volume "haproxy-run"   { path = "/run/haproxy" }
#   }
# and HAProxy's configuration names the same paths (README, "HAProxy"):
#   global
#     stats socket /run/haproxy/admin.sock mode 660 level admin
#   frontend https
#     bind :443 ssl crt /etc/haproxy/default.pem crt-list /etc/haproxy/consul-acme/crt-list
# The job runs on the nodes of class var.node_class only (set node_class = "edge" on those clients).

variable "datacenters" {
  type        = list(string)
  default     = ["dc1"]
  description = "Datacenters to run in."
}

variable "node_class" {
  type        = string
  default     = "edge"
  description = "The Nomad node class of the nodes that run HAProxy; one sink-only instance runs on each."
}

variable "image" {
  type        = string
  default     = "consul-acme:0.1.0"
  description = "Container image built from deploy/Dockerfile (the same image as the issuing job)."
}

variable "vault_addr" {
  type        = string
  default     = "https://vault.service.consul:8200"
  description = "Vault address (Nomad writes the token to secrets/vault_token, not the address)."
}

variable "vault_role" {
  type        = string
  default     = "consul-acme-sinks"
  description = "Vault JWT auth role for the workload identity; its token_policies are deploy/fabio-vault-policy.hcl (read and list only) and default."
}

variable "vault_mount" {
  type        = string
  default     = "secret"
  description = "KV v2 mount; the same as the issuing job's."
}

variable "vault_prefix" {
  type        = string
  default     = "fabio/certs"
  description = "Path under the mount where the issuing job writes the certificates; the same as the issuing job's."
}

variable "haproxy_dir" {
  type        = string
  default     = "/etc/haproxy/consul-acme"
  description = "HAProxy's crt-list folder, at the same path inside the container as on the node (host volume haproxy-certs)."
}

variable "haproxy_socket" {
  type        = string
  default     = "/run/haproxy/admin.sock"
  description = "HAProxy's admin-level stats socket, in the folder mounted from host volume haproxy-run."
}

variable "resync_interval" {
  type        = string
  default     = "10m"
  description = "How often HAProxy is re-synced with Vault in full: how late a renewal may reach it (renewals are due with a third of the lifetime left)."
}

variable "poll_interval" {
  type        = string
  default     = "30s"
  description = "How often Vault is listed (one request), so that a new name reaches HAProxy this soon."
}

# Measured (docs/operations.md, "Sinks beside the proxy"): 300 certificates into a real HAProxy
# through its runtime API: peak RSS 132 MiB; a full re-sync about 1 s of CPU; idle listing negligible.
variable "cpu" {
  type        = number
  default     = 100
  description = "CPU in MHz (a full re-sync of 300 certificates is about 1 s of CPU)."
}

variable "memory" {
  type        = number
  default     = 256
  description = "Memory in MiB: about twice the measured peak RSS (132 MiB with 300 certificates)."
}

variable "log_level" {
  type        = string
  default     = "info"
  description = "fatal, error, warn, info, debug, trace or silent."
}

job "consul-acme-sinks" {
  type        = "system"
  datacenters = var.datacenters

  constraint {
    attribute = "${node.class}"
    value     = var.node_class
  }

  update {
    max_parallel     = 1
    min_healthy_time = "10s"
    healthy_deadline = "2m"
  }

  group "sinks" {
    network {
      mode = "host"
      port "admin" {}
    }

    volume "haproxy-certs" {
      type      = "host"
      source    = "haproxy-certs"
      read_only = false
    }

    volume "haproxy-run" {
      type      = "host"
      source    = "haproxy-run"
      read_only = false
    }

    restart {
      attempts = 3
      interval = "5m"
      delay    = "15s"
      mode     = "delay"
    }

    task "sinks" {
      driver = "docker"

      config {
        image = var.image
        ports = ["admin"]
      }

      volume_mount {
        volume      = "haproxy-certs"
        destination = var.haproxy_dir
      }

      volume_mount {
        volume      = "haproxy-run"
        destination = "/run/haproxy"
      }

      # Longer than the sinks' own stop timeout (5 s), so an update pushed to HAProxy finishes.
      kill_timeout = "15s"

      # Health only; no Fabio tags: nothing routes to this instance.
      service {
        name     = "consul-acme-sinks"
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
            grace = "30s"
          }
        }

        # Warning (429) while HAProxy has been failing to take changes for 10 minutes, critical
        # while Vault fails: an alert, never a reason to stop a deployment or restart the task.
        check {
          name      = "certificates"
          type      = "http"
          path      = "/health/certificates"
          interval  = "30s"
          timeout   = "3s"
          on_update = "ignore"
        }
      }

      env {
        CONSUL_ACME_MODE          = "sinks"
        CONSUL_ACME_ADMIN_PORT    = "${NOMAD_PORT_admin}"
        CONSUL_ACME_INSTANCE_NAME = "${NOMAD_ALLOC_ID}"

        CONSUL_ACME_STORE        = "vault"
        VAULT_ADDR               = var.vault_addr
        VAULT_TOKEN_FILE         = "${NOMAD_SECRETS_DIR}/vault_token"
        CONSUL_ACME_VAULT_MOUNT  = var.vault_mount
        CONSUL_ACME_VAULT_PREFIX = var.vault_prefix

        CONSUL_ACME_HAPROXY_DIR    = var.haproxy_dir
        CONSUL_ACME_HAPROXY_SOCKET = var.haproxy_socket

        CONSUL_ACME_SINK_RESYNC_INTERVAL = var.resync_interval
        CONSUL_ACME_SINK_POLL_INTERVAL   = var.poll_interval

        CONSUL_ACME_LOG_LEVEL = var.log_level
      }

      # Workload identity (Nomad 1.7+): Nomad writes the role's token to secrets/vault_token and
      # renews or replaces it there; the process follows VAULT_TOKEN_FILE (change_mode "noop": a
      # new token costs no restart, and no re-sync of HAProxy from scratch).
      vault {
        role        = var.vault_role
        env         = false
        change_mode = "noop"
      }

      resources {
        cpu    = var.cpu
        memory = var.memory
      }

      logs {
        max_files     = 3
        max_file_size = 10
      }
    }
  }
}
