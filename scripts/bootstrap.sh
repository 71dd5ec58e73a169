#!/usr/bin/env bash
# Creates .venv with Python 3.11 and installs the pinned dependencies; re-installs only when
# requirements.txt or pyproject.toml change. Usage: scripts/bootstrap.sh [dependency-group]
set -euo pipefail
cd "$(dirname "$0")/.."
group="${1:-}"
python="${PYTHON:-}"
if [ -z "$python" ]; then
  for candidate in python3.11 python3; do
    if command -v "$candidate" >/dev/null 2>&1; then python="$candidate"; break; fi
  done
fi
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
stamp=".venv/.bootstrap-stamp-${group:-runtime}"
want=$(cat requirements.txt pyproject.toml | sha256sum | cut -c1-16)
if [ -z "$group" ] && [ "$(cat .venv/.bootstrap-stamp-dev 2>/dev/null || true)" = "$want" ]; then
  exit 0  # the dev group includes every runtime dependency
fi
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
  echo "installing dependencies into .venv ..." >&2
  # pip >= 25.1 understands dependency groups (pyproject.toml [dependency-groups]).
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade "pip>=25.1"
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements.txt ${group:+--group "$group"}
  echo "$want" > "$stamp"
fi
