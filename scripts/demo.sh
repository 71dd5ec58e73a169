#!/usr/bin/env bash
# The main job on the embedded defaults: ingest a folder (samples/ unless given), wait until every
# file is terminal, print each file's outcome, then answer a search from the terminal.
#   scripts/demo.sh [folder] [query]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
folder="${1:-samples}"
query="${2:-Can I return a used tent, and how long do I have?}"
export INGEST_DATA_DIR="${INGEST_DATA_DIR:-.ingestion/demo}"
.venv/bin/python -m ingestion ingest "$folder"
echo
echo "search: $query"
.venv/bin/python -m ingestion search "$query" --top 3
