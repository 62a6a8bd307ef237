#!/usr/bin/env bash
# Set up (first time) and start the gateway, or the safeguarding console, on the shipped
# policy.yaml.  They are two processes; start each in its own terminal (or as the systemd
# services docs/webpolicy.service and docs/webpolicy-console.service, see docs/deployment.md):
#
#   scripts/run.sh [MITMDUMP OPTIONS]       the gateway (proxy, port 8080); options go to
#                                           `webpolicy run` (e.g. --workers 1) and on to
#                                           mitmdump (e.g. --listen-port 3128)
#   scripts/run.sh console [OPTIONS]        the safeguarding console (http://127.0.0.1:8081);
#                                           options go to `webpolicy console`, e.g.
#                                           --listen 127.0.0.1:9000.  Add a DSL first:
#                                           .venv/bin/webpolicy users add NAME --role dsl
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
if [[ "${1:-}" == "console" ]]; then
    shift
    exec .venv/bin/webpolicy console --policy policy.yaml "$@"
fi
exec .venv/bin/webpolicy run --policy policy.yaml "$@"
