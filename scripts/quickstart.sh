#!/usr/bin/env bash
# Quick start: installs what it needs, then runs consul-acme on this machine against a local
# Consul dev agent and a local Pebble (a test ACME CA), registers a sample service and waits for a
# certificate issued by this run's Pebble (scripts/quickstart.mjs). Every run starts clean: it
# removes the .quickstart/ folder an earlier run left and writes the new certificate, key, Pebble
# root and logs there. It stops consul-acme, Pebble and Consul when it succeeds, fails or is
# interrupted; pass --keep-running to leave everything up until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -d node_modules ] || npm ci --no-audit --no-fund --loglevel=error
bash scripts/setup-deps.sh
npm run --silent build
exec node scripts/quickstart.mjs "$@"
