#!/usr/bin/env bash
# Set up (first time) and run every test: unit tests and real end-to-end tests.
# End-to-end tests use curl, chromium, prometheus and unshare from Debian (installed here when
# missing) and need root: the test sites bind 127.0.1.x:80/443 and the proxy resolves them
# through a private /etc/hosts.  Extra options go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-system-deps.sh
scripts/setup.sh --test
exec .venv/bin/python -m pytest "$@"
