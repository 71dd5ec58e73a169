#!/usr/bin/env bash
# The whole test suite: linters, type checker, then every test (unit, functions, integration,
# corpus). Extra arguments go to pytest, e.g. scripts/test.sh -k chunking
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh dev
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
