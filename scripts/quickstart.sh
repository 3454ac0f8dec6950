#!/usr/bin/env bash
# Quick start: installs what it needs, then runs consul-acme on this machine against a local
# Consul dev agent and a local Pebble (a test ACME CA), registers a sample service and waits for
# its certificate on disk. Pass --keep-running to leave everything up afterwards (Ctrl-C stops).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -d node_modules ] || npm ci --no-audit --no-fund --loglevel=error
bash scripts/setup-deps.sh
npm run --silent build
exec node scripts/quickstart.mjs "$@"
