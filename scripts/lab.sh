#!/usr/bin/env bash
# npm run lab -- up N | down | status: a lab of berth hosts on this machine (test/lab/main.ts).
# Only `up` needs the setup (packages, build); taking a lab down must work whatever the tree holds.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = up ]; then bash scripts/setup.sh >&2; fi
exec node dist/test/lab/main.js "$@"
