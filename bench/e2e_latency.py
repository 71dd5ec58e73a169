"""Drop-to-searchable latency of single small files on the local host, against an in-process baseline.

    .venv/bin/python bench/e2e_latency.py [--files 30]

For each file: write it into the inbox (atomically, as an upload completes), then poll
``POST /api/search`` for a word only that file holds, until its chunk comes back. The time covers
everything a user waits for: the watcher noticing the file (it reports a file once two polls agree
it is complete), the Event Grid payload, the blob trigger starting the orchestration, the five stage
activities and the outcome, each through the Durable engine with its SQLite history, and search.

Baseline, in the same run: the same files through ``pipeline.run_document`` in-process (the stages
alone, no host, no events, no orchestration), so the ratio shows what hosting adds. The host runs
once with the default watch interval and once with a short one, to separate detection from the rest.
Parsing runs in the sandboxed child process in every case, as in production.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

if __name__ == "__main__":
    from bench.e2e_rounds import main  # here, not at the top: see bench/e2e_rounds.py

    main()
