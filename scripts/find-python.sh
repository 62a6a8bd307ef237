#!/usr/bin/env bash
# Print the path of a Python >= 3.12 (mitmproxy 12 needs it), or explain and fail.
# Order: $PYTHON, python3.13/python3.12 on PATH, pyenv's 3.13/3.12, then python3.
set -euo pipefail

ok() { "$1" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' 2>/dev/null; }

candidates=()
[ -n "${PYTHON:-}" ] && candidates+=("$PYTHON")
candidates+=(python3.13 python3.12)
if command -v pyenv >/dev/null 2>&1; then
  for v in $(pyenv versions --bare 2>/dev/null | grep -E '^3\.(1[2-9])' | sort -rV); do
    candidates+=("$(pyenv root)/versions/$v/bin/python3")
  done
fi
candidates+=(python3)

for c in "${candidates[@]}"; do
  path=$(command -v "$c" 2>/dev/null || true)
  if [ -n "$path" ] && ok "$path"; then
    echo "$path"
    exit 0
  fi
done
echo "webpolicy needs Python 3.12 or newer (mitmproxy 12); none found." >&2
echo "Install one (e.g. 'pyenv install 3.12', or your distribution's python3.12) or set PYTHON=/path/to/python3.12." >&2
exit 1
