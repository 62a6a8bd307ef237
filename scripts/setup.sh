#!/usr/bin/env bash
# Create .venv with a Python >= 3.12 and install webpolicy into it.  Idempotent and quick when
# nothing changed: the install is redone only when pyproject.toml is newer than the last one.
# Usage: scripts/setup.sh [--test]   (--test also installs the test tools)
# The gateway and the safeguarding console (`webpolicy console`, Django) are both installed.
set -euo pipefail
cd "$(dirname "$0")/.."
extra="[console]"
stamp=".venv/.installed"
[ "${1:-}" = "--test" ] && extra="[test]" && stamp=".venv/.installed-test"
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' 2>/dev/null; then
  python=$(scripts/find-python.sh)
  rm -rf .venv
  "$python" -m venv .venv
fi
fresh() { [ -f "$1" ] && ! [ pyproject.toml -nt "$1" ]; }
# A test install includes everything a plain one has.
if ! fresh "$stamp" && ! { [ "$stamp" = .venv/.installed ] && fresh .venv/.installed-test; }; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e ".${extra}"
  touch "$stamp"
fi
