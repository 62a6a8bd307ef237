#!/usr/bin/env bash
# Create .venv with a Python >= 3.12 and install webpolicy into it.  Idempotent and quick when
# nothing changed: the install is redone only when pyproject.toml is newer than the last one.
# Usage: scripts/setup.sh [--test]   (--test also installs the test tools)
set -euo pipefail
cd "$(dirname "$0")/.."
extra=""
[ "${1:-}" = "--test" ] && extra="[test]"
stamp=".venv/.installed${extra:+-test}"
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' 2>/dev/null; then
  python=$(scripts/find-python.sh)
  rm -rf .venv
  "$python" -m venv .venv
fi
fresh() { [ -f "$1" ] && ! [ pyproject.toml -nt "$1" ]; }
# A test install includes everything a plain one has.
if ! fresh "$stamp" && ! { [ -z "$extra" ] && fresh .venv/.installed-test; }; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e ".${extra}"
  touch "$stamp"
fi
