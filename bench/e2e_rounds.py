"""The machinery of ``bench/e2e_latency.py``, in a module of its own: parse children re-run the
entry script (CPython's forkserver prepares each child from the parent's ``__main__`` when that is a
script), so the script stays light for the children to start in milliseconds, as they do under
``python -m ingestion.devhost`` (a ``__main__`` module, which children do not re-run).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import tempfile
import time
from pathlib import Path

import function_app
from ingestion.api import search
from ingestion.bootstrap import build_services, using_services
from ingestion.cli import post_search
from ingestion.config import Settings
from ingestion.devhost.host import Host
from ingestion.jobs import register_version
from ingestion.model import DocumentRef
from ingestion.pipeline import run_document
from ingestion.stages import StageRequest

REPO = Path(__file__).resolve().parents[1]
WORDS = ("harbour", "lantern", "meadow", "copper", "violin", "glacier", "orchard", "thunder")


def document(number: int) -> tuple[str, bytes]:
    token = f"zq{number:04d}marker"
    body = " ".join(WORDS[(number + i) % len(WORDS)] for i in range(120))
    return token, f"# Note {number}\n\nThe code word is {token}. {body}\n".encode()


def run_host(settings: Settings, files: int, watch_s: float) -> list[float]:
    settings = dataclasses.replace(settings, host=dataclasses.replace(settings.host, watch_interval_s=watch_s))
    services = build_services(settings)
    latencies = []
    try:
        with using_services(services):
            host = Host(
                function_app.app,
                data_dir=settings.data_dir,
                blob_source=services.blobs,
                port=0,
                activity_workers=settings.host.activity_workers,
                watch_interval_s=watch_s,
                host_json=REPO / "host.json",
            )
            with host:
                for number in range(files):
                    token, data = document(number)
                    staging = settings.data_dir / f"upload-{number}.md"
                    staging.write_bytes(data)
                    started = time.perf_counter()
                    os.replace(staging, settings.inbox_dir / f"note-{number}.md")
                    while not any(
                        hit["path"] == f"note-{number}.md"
                        for hit in post_search(host.base_url, token, top=3, timeout_s=10)
                    ):
                        if time.perf_counter() - started > 120:
                            raise TimeoutError(f"note-{number}.md not searchable after 120 s")
                        time.sleep(0.005)
                    latencies.append(time.perf_counter() - started)
    finally:
        services.close()
    return latencies


def run_baseline(settings: Settings, files: int) -> list[float]:
    services = build_services(settings)
    latencies = []
    try:
        for number in range(files):
            token, data = document(number)
            path = settings.inbox_dir / f"note-{number}.md"
            started = time.perf_counter()
            path.write_bytes(data)
            blob = services.blobs.properties(path.name)
            registration = register_version(services, DocumentRef(settings.container, blob.path), blob.version)
            run_document(services, StageRequest(registration.job.doc_id, blob.version.etag))
            assert any(hit.path == path.name for hit in search(services, token, top=3))
            latencies.append(time.perf_counter() - started)
    finally:
        services.close()
    return latencies


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description="Drop-to-searchable latency of single small files on the local host.")
    parser.add_argument("--files", type=int, default=30)
    args = parser.parse_args()
    results: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="e2e-latency-") as scratch:
        for label, watch_s in (("baseline", None), ("host, watch 0.5 s", 0.5), ("host, watch 0.05 s", 0.05)):
            root = Path(scratch) / label.replace(" ", "_").replace(",", "")
            (root / "inbox").mkdir(parents=True)
            settings = dataclasses.replace(
                Settings.from_env({}), inbox_dir=root / "inbox", data_dir=root / "data", tiktoken_cache_dir=root / "tk"
            )
            settings.data_dir.mkdir()
            if watch_s is None:
                results[label] = run_baseline(settings, args.files)
            else:
                results[label] = run_host(settings, args.files, watch_s)
    base = statistics.median(results["baseline"])
    print(f"drop-to-searchable latency, {args.files} small Markdown files one at a time (seconds)")
    print(f"{'run':<22}{'p50':>8}{'p95':>8}{'max':>8}{'p50 / baseline':>16}")
    for label, values in results.items():
        p50, p95 = statistics.median(values), percentile(values, 0.95)
        print(f"{label:<22}{p50:>8.3f}{p95:>8.3f}{max(values):>8.3f}{p50 / base:>15.1f}x")
