"""``python -m ingestion``: ingest a folder, search it, and ask what happened to each file.

``ingest`` runs the folder through the local host (``ingestion.devhost``): the same blob trigger,
orchestration and activities as in Azure. ``status --wait`` and ``search --url`` serve scripts that
talk to a host already running (``scripts/demo.sh``). ``stats`` prints the operator's figures (success
rate, failures by reason, backlog) from the job store, as the Azure workbook shows them from metrics.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import io
import json
import logging
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from ingestion import telemetry
from ingestion.api import all_jobs, citation, job_status, report_payload, search
from ingestion.bootstrap import build_services
from ingestion.config import Settings, SettingsError
from ingestion.errors import IngestionError
from ingestion.model import Job
from ingestion.ports import SearchMode
from ingestion.reconcile_run import reconcile
from ingestion.services import Services
from ingestion.stats import job_stats, parse_window, render


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return _main(argv)
    finally:
        # ``ingest`` runs function_app.py, which starts telemetry when the environment configures it:
        # flush it, within a deadline, rather than leave it to exit hooks that wait for a collector.
        telemetry.shutdown()


def _main(argv: Sequence[str] | None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # File names can hold bytes that are not UTF-8; show them escaped rather than crash on print.
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="backslashreplace")
    try:
        settings = Settings.from_env()
    except SettingsError as error:
        parser.error(str(error))
    if args.data_dir:
        settings = dataclasses.replace(settings, data_dir=args.data_dir)
    if args.command == "ingest":
        return _ingest_command(parser, args, settings)
    if args.command == "index":
        return _ensure_index(settings)
    if args.command in ("search", "reconcile") and args.url:
        return _remote(args)
    if args.command == "reconcile" and not args.dry_run:
        parser.error("reconcile re-drives orchestrations through a host's Durable client: pass --url, or --dry-run")
    return _local(parser, args, settings)


def _remote(args: argparse.Namespace) -> int:
    """``search`` and ``reconcile`` asked of a running host or app."""
    if args.command == "search":
        return _search_remote(args.url, args.query, args.top, as_json=args.json)
    return _print_report(_post_reconcile(args.url, dry_run=args.dry_run), as_json=args.json)


def _local(parser: argparse.ArgumentParser, args: argparse.Namespace, settings: Settings) -> int:
    """``search``, ``reconcile --dry-run``, ``status`` and ``stats`` on the stores the settings name."""
    try:
        services = build_services(settings)
    except SettingsError as error:  # settings that read well but do not fit together (chunk size vs model)
        parser.error(str(error))
    try:
        if args.command == "stats":
            return _stats(services, args.window, as_json=args.json)
        if args.command == "search":
            return _search(services, args.query, args.top, SearchMode(args.mode), as_json=args.json)
        if args.command == "reconcile":
            report = asyncio.run(reconcile(services, None, dry_run=True))
            return _print_report(report_payload(report), as_json=args.json)
        if args.wait is not None and not _wait_settled(services, args.wait, quiet=args.json):
            return 1
        return _status(services, as_json=args.json)
    finally:
        services.close()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ingestion", description=__doc__)
    parser.add_argument("--data-dir", type=Path, help="where jobs, artifacts and the index live (INGEST_DATA_DIR)")
    commands = parser.add_subparsers(dest="command", required=True)
    ingest = commands.add_parser(
        "ingest",
        help="ingest every file of a folder through the local host and wait until each is done; the folder "
        "plays the container, so files gone since the last run (same --data-dir) leave the index",
    )
    ingest.add_argument("folder", type=Path)
    ingest.add_argument("--workers", type=int, help="activities at once (INGEST_ACTIVITY_WORKERS, default 2)")
    ingest.add_argument("--json", action="store_true", help="one JSON record per document")
    find = commands.add_parser("search", help="hybrid search over the ingested chunks")
    find.add_argument("query")
    find.add_argument("--top", type=int, default=5)
    find.add_argument("--mode", choices=[m.value for m in SearchMode], default=SearchMode.HYBRID.value)
    find.add_argument("--json", action="store_true")
    find.add_argument("--url", help="ask a running host instead (POST <url>/api/search), e.g. http://127.0.0.1:7071")
    status = commands.add_parser("status", help="every document's state and, when not indexed, why")
    status.add_argument("--json", action="store_true")
    status.add_argument("--wait", type=float, metavar="SECONDS", help="first wait until no job is in progress")
    stats = commands.add_parser(
        "stats", help="success rate, failures by reason and backlog, from the job store (as the workbook shows)"
    )
    stats.add_argument(
        "--window",
        type=_window,
        default="24h",
        metavar="SPAN",
        help="count jobs finished in the last SPAN: 30m, 24h, 7d, or all (default 24h)",
    )
    stats.add_argument("--json", action="store_true")
    fix = commands.add_parser(
        "reconcile",
        help="compare blobs, jobs and the index and repair what differs; --dry-run prints the plan only",
    )
    fix.add_argument("--dry-run", action="store_true", help="print what would be done, change nothing")
    fix.add_argument("--url", help="run the pass in a running host or app (POST <url>/api/reconcile), e.g. "
                     "http://127.0.0.1:7071: re-driving needs its Durable client")  # fmt: skip
    fix.add_argument("--json", action="store_true")
    index = commands.add_parser("index", help="manage the Azure AI Search index (a deploy step)")
    index.add_argument(
        "action",
        choices=["ensure"],
        help="ensure: create the index, or update its schema (INGEST_SEARCH_ENDPOINT, INGEST_SEARCH_INDEX, "
        "INGEST_EMBED_DIMENSIONS, INGEST_SEARCH_SEMANTIC_CONFIG; a key or a control-plane role)",
    )
    return parser


def _window(text: str) -> timedelta | None:
    try:
        return parse_window(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from error


def _ingest_command(parser: argparse.ArgumentParser, args: argparse.Namespace, settings: Settings) -> int:
    if settings.profile != "embedded":
        parser.error(
            "ingest FOLDER needs the embedded profile (the folder plays the container); with "
            "INGEST_PROFILE=azure, upload the files to the container and run python -m ingestion.devhost"
        )
    if not args.folder.is_dir():
        parser.error(f"{args.folder} is not a folder")
    host = settings.host if args.workers is None else dataclasses.replace(settings.host, activity_workers=args.workers)
    return _ingest(dataclasses.replace(settings, inbox_dir=args.folder, host=host), as_json=args.json)


def _ingest(settings: Settings, *, as_json: bool) -> int:
    from ingestion.devhost.engine import HubLocked  # noqa: PLC0415 -- only this command loads the host
    from ingestion.devhost.folder import ingest_folder  # noqa: PLC0415 -- as above

    try:
        jobs = ingest_folder(settings, progress=None if as_json else _progress)
    except HubLocked as locked:
        print(f"{locked}\nanother host uses this data directory: stop it, or pass another --data-dir", file=sys.stderr)
        return 2
    if not as_json:
        print(file=sys.stderr)
    _print_jobs(jobs, as_json=as_json)
    return 0


def _post_reconcile(url: str, *, dry_run: bool, timeout_s: float = 600.0) -> dict[str, Any]:
    query = "?dry_run=true" if dry_run else ""
    request = urllib.request.Request(f"{url.rstrip('/')}/api/reconcile{query}", data=b"", method="POST")  # noqa: S310 -- the operator's URL
    with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310 -- as above
        return dict(json.loads(response.read()))


def _print_report(report: dict[str, Any], *, as_json: bool) -> int:
    if as_json:
        print(json.dumps(report, ensure_ascii=False, indent=2))
        return 0
    for action in report["actions"]:
        print(f"{action['rule']:<19} {action['path']}: {action['reason']} -> {action['outcome']}")
    seen = ", ".join(f"{count} {what}" for what, count in report["seen"].items()) or "nothing"
    finished = ", ".join(report["finished_sweeps"]) or "none"
    failed = ", ".join(report.get("failed_sweeps") or []) or "none"
    print(f"{len(report['actions'])} actions; read {seen}; sweeps finished: {finished}; stopped by a fault: {failed}")
    return 0


def _ensure_index(settings: Settings) -> int:
    if not settings.azure.search_endpoint:
        print("index ensure needs INGEST_SEARCH_ENDPOINT", file=sys.stderr)
        return 2
    from ingestion.adapters.azure_profile import ensure_search_index  # noqa: PLC0415 -- Azure SDKs only here

    try:
        outcome = ensure_search_index(settings)
    except (IngestionError, ValueError) as error:  # ValueError: an endpoint or credential it cannot use
        print(f"index {settings.azure.search_index!r}: {error}", file=sys.stderr)
        return 1
    print(f"index {settings.azure.search_index!r}: {outcome}")
    return 0


def _progress(done: int, total: int, statuses: Counter[str]) -> None:
    bar = "#" * (30 * done // max(total, 1))
    counts = ", ".join(f"{count} {status}" for status, count in sorted(statuses.items()))
    print(f"\r[{bar:<30}] {done}/{total}  {counts[:70]:<70}", end="", file=sys.stderr, flush=True)


def _wait_settled(services: Services, timeout_s: float, *, quiet: bool) -> bool:
    """Wait until every known job has left the pipeline (terminal or retry_later)."""
    deadline = time.monotonic() + timeout_s
    while True:
        jobs = list(all_jobs(services.jobs))
        done = sum(1 for job in jobs if not job.status.in_progress)
        if not quiet:
            _progress(done, len(jobs), Counter(job.status.value for job in jobs))
        if jobs and done == len(jobs):
            if not quiet:
                print(file=sys.stderr)
            return True
        if time.monotonic() > deadline:
            print(
                f"\n{len(jobs) - done} of {len(jobs)} files still in progress after {timeout_s:.0f} s", file=sys.stderr
            )
            return False
        time.sleep(0.25)


def post_search(url: str, query: str, top: int = 5, timeout_s: float = 30.0) -> list[dict[str, Any]]:
    """The results of a running host's ``POST <url>/api/search`` (also used by tests and benchmarks)."""
    request = urllib.request.Request(  # noqa: S310 -- the URL is the operator's own host
        url.rstrip("/") + "/api/search",
        data=json.dumps({"query": query, "top": top}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310 -- as above
        return list(json.loads(response.read())["results"])


def _search_remote(url: str, query: str, top: int, *, as_json: bool) -> int:
    results = post_search(url, query, top)
    if as_json:
        for result in results:
            print(json.dumps(result, ensure_ascii=False))
        return 0
    if not results:
        print("no results")
    for rank, result in enumerate(results, 1):
        snippet = " ".join(str(result["content"]).split())[:240]
        print(f"{rank}. {result['path']} (chunk {result['ordinal']})  score={result['score']:.4f}\n   {snippet}\n")
    return 0


def _search(services: Services, query: str, top: int, mode: SearchMode, *, as_json: bool) -> int:
    hits = search(services, query, top=top, mode=mode)
    if as_json:
        for hit in hits:
            print(json.dumps({**dataclasses.asdict(hit), "citation": citation(hit)}, ensure_ascii=False))
        return 0
    if not hits:
        print("no results")
    for rank, hit in enumerate(hits, 1):
        snippet = " ".join(hit.content.split())[:240]
        print(f"{rank}. {citation(hit)}  score={hit.score:.4f}\n   {snippet}\n")
    return 0


def _stats(services: Services, window: timedelta | None, *, as_json: bool) -> int:
    stats = job_stats(services.jobs, services.clock(), window)
    print(json.dumps(stats.to_payload(), ensure_ascii=False, indent=2) if as_json else render(stats))
    return 0


def _status(services: Services, *, as_json: bool) -> int:
    _print_jobs(list(all_jobs(services.jobs)), as_json=as_json)
    return 0


def _print_jobs(jobs: list[Job], *, as_json: bool) -> None:
    records = sorted((job_status(job) for job in jobs), key=lambda r: r["path"])
    if as_json:
        for record in records:
            print(json.dumps(record, ensure_ascii=False))
        return
    for record in records:
        reason = f"  {record['reason']}: {record['message']}" if record["reason"] else ""
        print(f"{record['status']:<13} {record['chunks']:>5} chunks  {record['path']}{reason}")
    totals = Counter(record["status"] for record in records)
    print(
        "\n" + ", ".join(f"{count} {status}" for status, count in sorted(totals.items())) + f" ({len(records)} files)"
    )
