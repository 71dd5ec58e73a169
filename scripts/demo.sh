#!/usr/bin/env bash
# The main job on the embedded defaults: the local host serves function_app.py on 127.0.0.1:7071,
# ingests the sample files (copied into inbox/), answers a search through POST /api/search, then
# keeps watching inbox/ until Ctrl-C: drop a file there and it becomes searchable.
#   scripts/demo.sh ["question"]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
query="${1:-Can I return a used tent, and how long do I have?}"
export INGEST_DATA_DIR="${INGEST_DATA_DIR:-.ingestion/demo}"
export INGEST_INBOX_DIR="${INGEST_INBOX_DIR:-inbox}"
export INGEST_LOG_FORMAT="${INGEST_LOG_FORMAT:-text}"  # the host's log lines, for a person (JSON by default)
export UploadsStorage="${UploadsStorage:-UseDevelopmentStorage=true}"  # the blob trigger's connection setting
port="${INGEST_HOST_PORT:-7071}"
url="http://127.0.0.1:$port"

mkdir -p "$INGEST_INBOX_DIR"
for sample in samples/*; do  # never overwrite a file of the same name already in the inbox
  [ -e "$INGEST_INBOX_DIR/$(basename "$sample")" ] || cp "$sample" "$INGEST_INBOX_DIR/"
done

if ! .venv/bin/python -c "import socket; socket.create_server(('127.0.0.1', $port)).close()" 2>/dev/null; then
  echo "port $port on 127.0.0.1 is in use (another host?): set INGEST_HOST_PORT to a free one" >&2
  exit 1
fi
.venv/bin/python -m ingestion.devhost --port "$port" &
host=$!
# SIGTERM, not SIGINT: a background job of a non-interactive shell starts with SIGINT ignored.
trap 'kill -TERM "$host" 2>/dev/null || true; wait "$host" 2>/dev/null || true' EXIT
trap 'exit 130' INT TERM

for _ in $(seq 200); do
  kill -0 "$host" 2>/dev/null || { echo "the local host exited (is port $port in use? set INGEST_HOST_PORT)" >&2; exit 1; }
  .venv/bin/python -c "import urllib.request; urllib.request.urlopen('$url/api/health', timeout=1)" 2>/dev/null && break
  sleep 0.3
done

.venv/bin/python -m ingestion status --wait 300
echo
echo "POST $url/api/search  {\"query\": \"$query\"}"
.venv/bin/python -m ingestion search --url "$url" "$query" --top 3
echo "Watching $INGEST_INBOX_DIR/ (Ctrl-C stops): drop a file there, then search it, e.g."
echo "  .venv/bin/python -m ingestion search --url $url \"your question\""
wait "$host"
