#!/usr/bin/env bash
# Set up (first time) and start the gateway on the shipped policy.yaml.
# Any options are passed to `webpolicy run` (e.g. --workers 1) and on to mitmdump (e.g.
# --listen-port 3128).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/webpolicy run --policy policy.yaml "$@"
