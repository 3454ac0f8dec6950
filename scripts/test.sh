#!/usr/bin/env bash
# The test command: installs the locked npm dependencies, Pebble and Consul 1.8.7 (scripts/setup-deps.sh),
# builds, lints and runs every test with Node's test runner. Arguments filter test files: scripts/test.sh unit/
set -euo pipefail
cd "$(dirname "$0")/.."
npm ci --no-audit --no-fund --loglevel=error
bash scripts/setup-deps.sh
npm run --silent build
npm run --silent lint
node scripts/run-tests.mjs "$@"
