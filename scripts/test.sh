#!/usr/bin/env bash
# The whole test suite: linters, type checker, then every test (unit, functions, integration on
# the emulators, chaos, corpus). It installs what it needs: .venv/ (pip) and node_modules/ (npm ci:
# Azurite and the Cosmos DB emulator, which the tests start themselves on 127.0.0.1).
# Extra arguments go to pytest, e.g. scripts/test.sh -k chunking
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh dev
# The emulators the integration tests start (Azurite, the Cosmos DB emulator), from package-lock.json.
lock=$(sha256sum package-lock.json | cut -c1-16)
if [ "$(cat node_modules/.ingestion-stamp 2>/dev/null || true)" != "$lock" ]; then
  echo "installing the test emulators into node_modules ..." >&2
  if npm ci --no-audit --no-fund --loglevel=error; then
    echo "$lock" > node_modules/.ingestion-stamp
  else
    echo "npm ci failed: the tests that need an emulator will skip (and fail under CI=true)" >&2
  fi
fi
echo "== ruff check"; .venv/bin/ruff check .
echo "== ruff format --check"; .venv/bin/ruff format --check .
echo "== mypy (strict on ingestion/)"; .venv/bin/mypy
echo "== pytest"
status=0
.venv/bin/python -m pytest "$@" || status=$?
if [ "$status" -eq 5 ]; then
  echo "pytest collected no tests: that is a failure here" >&2
  exit 1
fi
exit "$status"
