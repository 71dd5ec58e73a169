"""The whole pipeline on the "emulators" profile: Azurite, the Cosmos DB emulator and the local AI
Search and embeddings servers, selected by settings alone.

The local host (``python -m ingestion.devhost``) runs ``function_app.py`` in its own process with
``INGEST_PROFILE=azure`` and the services' endpoints and keys: its watcher polls the Azurite
container, and every stage reads and writes through the Azure adapters and the real SDKs. The index
is created by the deploy step, ``python -m ingestion index ensure``, as in a deployment.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from azure.storage.blob import BlobServiceClient, ContainerClient

from ingestion.api import all_jobs
from ingestion.bootstrap import build_services
from ingestion.cli import post_search
from ingestion.config import Settings
from ingestion.model import DocumentRef, JobStatus
from ingestion.retry import THROTTLED
from ingestion.services import Services
from tests.conftest import REPO
from tests.emulators.azurite import Azurite
from tests.emulators.cosmos import CosmosEmulator, fresh_database
from tests.emulators.cosmos_proxy import CosmosProxy
from tests.emulators.embeddings import API_KEY as EMBEDDINGS_KEY
from tests.emulators.embeddings_server import EmbeddingsServer
from tests.emulators.process import environment_without, free_port, start_devhost
from tests.emulators.process import wait_until as poll
from tests.emulators.search_server import SearchServer

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
WAIT_S = 180.0
SAMPLES = sorted(path for path in (REPO / "samples").iterdir() if path.is_file())


@dataclass(frozen=True)
class Emulators:
    env: dict[str, str]  # the settings: all a process needs to run on the emulators
    cosmos: CosmosProxy  # stands between the app and the Cosmos DB emulator; injects faults
    search: SearchServer
    embeddings: EmbeddingsServer


@pytest.fixture
def emulators(
    azurite: Azurite,
    cosmos_emulator: CosmosEmulator,
    search_server: SearchServer,
    embeddings_server: EmbeddingsServer,
    tmp_path: Path,
) -> Iterator[Emulators]:
    """The settings of the emulators profile, on fresh containers, a fresh database and a fresh index name."""
    suffix = uuid.uuid4().hex[:8]
    storage = BlobServiceClient.from_connection_string(azurite.connection_string)
    # "uploads" is the container function_app.py's blob trigger names; the artifacts one is fresh.
    uploads, artifacts = "uploads", f"artifacts-{suffix}"
    for name in (uploads, artifacts):
        storage.create_container(name)  # infrastructure's job in Azure; the app never creates them
    search_server.reset()
    embeddings_server.reset()
    proxy = CosmosProxy(cosmos_emulator.endpoint).start()  # mends the emulator's 500 for a missing item
    try:
        with fresh_database(cosmos_emulator) as database:
            env = environment_without("INGEST_", "UploadsStorage") | {
                "INGEST_PROFILE": "azure",
                "UploadsStorage": azurite.connection_string,
                "INGEST_CONTAINER": uploads,
                "INGEST_ARTIFACTS_CONTAINER": artifacts,
                "INGEST_COSMOS_ENDPOINT": proxy.endpoint,
                "INGEST_COSMOS_KEY": cosmos_emulator.key,
                "INGEST_COSMOS_DATABASE": database,
                "INGEST_COSMOS_ENDPOINT_DISCOVERY": "false",
                "INGEST_SEARCH_ENDPOINT": search_server.url,
                "INGEST_SEARCH_KEY": search_server.api_key,
                "INGEST_SEARCH_INDEX": f"chunks-{suffix}",
                "INGEST_EMBEDDER": "azure_openai",
                "INGEST_OPENAI_ENDPOINT": embeddings_server.url,
                "INGEST_OPENAI_API_KEY": EMBEDDINGS_KEY,
                "INGEST_EMBED_DIMENSIONS": "256",
                "INGEST_DATA_DIR": str(tmp_path / "data"),  # the local host's durable state only
                "INGEST_HOST_PORT": str(free_port()),
                "INGEST_WATCH_INTERVAL_S": "0.2",
                "INGEST_RETRY_FIRST_DELAY_S": "0.2",
                "PYTHONUNBUFFERED": "1",
            }
            yield Emulators(env, proxy, search_server, embeddings_server)
    finally:
        proxy.stop()
        for name in (uploads, artifacts):
            storage.delete_container(name)
        storage.close()


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ingestion", *args],
        check=False,
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@contextmanager
def running_host(env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``python -m ingestion.devhost`` on the emulators profile; stopped with SIGTERM, which must exit 0."""
    host = start_devhost(env, log)
    try:
        yield host
    finally:
        host.send_signal(signal.SIGTERM)
        host.wait(timeout=60)
    assert host.returncode == 0, log.read_text(errors="replace")[-5000:]


def prepared(env: dict[str, str]) -> tuple[ContainerClient, Services]:
    """The index created by the deploy step, the samples uploaded; the uploads container and the
    app's own adapters (to look at the outcome), both to close."""
    ensure = cli(env, "index", "ensure")
    assert ensure.returncode == 0, ensure.stderr
    uploads = ContainerClient.from_connection_string(env["UploadsStorage"], env["INGEST_CONTAINER"])
    for sample in SAMPLES:
        uploads.upload_blob(sample.name, sample.read_bytes())
    return uploads, build_services(Settings.from_env(env))


def assert_index_holds_each_jobs_version(services: Services) -> None:
    """Every job's chunks, exactly as many as it recorded, all of the version it recorded."""
    for job in all_jobs(services.jobs):
        held = list(services.index.ids_for_doc(job.doc_id))
        assert len(held) == job.chunk_count > 0, job.path
        assert {version for _, version in held} == {job.version.content_hash}, job.path


def wait_until(condition: Callable[[], bool], host: subprocess.Popen[bytes], log: Path) -> None:
    poll(condition, "the condition", WAIT_S, process=host, log=log, interval_s=0.2)


def statuses(services: Services) -> dict[str, JobStatus]:
    return {job.path: job.status for job in all_jobs(services.jobs)}


def test_the_pipeline_runs_end_to_end_on_the_emulators(emulators: Emulators, tmp_path: Path) -> None:
    """Samples uploaded to Azurite are indexed and searchable; an overwrite re-indexes; a delete removes."""
    env = emulators.env
    # Given the index created by the deploy step (a second run changes nothing) and the samples uploaded
    uploads, services = prepared(env)
    again = cli(env, "index", "ensure")
    assert again.stdout.strip().endswith("unchanged"), again.stdout + again.stderr
    log = tmp_path / "host.log"
    url = f"http://127.0.0.1:{env['INGEST_HOST_PORT']}"
    try:
        with running_host(env, log) as host:
            # When the host runs, every sample ends indexed
            wait_until(lambda: statuses(services) == {s.name: JobStatus.INDEXED for s in SAMPLES}, host, log)
            # Then the chatbot's search finds the answer, and the index holds each job's version exactly
            hits = post_search(url, "how many days do I have to return an item?", timeout_s=30)
            assert hits[0]["path"] == "return-policy.pdf"
            assert_index_holds_each_jobs_version(services)

            # When a file is overwritten, its new content replaces the old
            uploads.upload_blob("price-list.csv", b"sku,product,price_eur\nNW-GL,Glacier lantern,59\n", overwrite=True)
            price_list = DocumentRef(env["INGEST_CONTAINER"], "price-list.csv").doc_id
            new_etag = uploads.get_blob_client("price-list.csv").get_blob_properties().etag

            def reindexed() -> bool:
                job = services.jobs.get(price_list)
                if job is None or job.status is not JobStatus.INDEXED:
                    return False
                return job.version.etag.strip('"') == new_etag.strip('"')

            wait_until(reindexed, host, log)
            assert any(hit["path"] == "price-list.csv" for hit in post_search(url, "glacier lantern", timeout_s=30))
            assert_index_holds_each_jobs_version(services)

            # When a file is deleted, its job says so and its chunks leave the index
            uploads.delete_blob("travel-policy.md")
            travel = DocumentRef(env["INGEST_CONTAINER"], "travel-policy.md").doc_id
            # (the job says deleted first, then the chunks are purged: a run in flight must stop first)
            wait_until(
                lambda: (
                    statuses(services).get("travel-policy.md") is JobStatus.DELETED
                    and services.index.count_for_doc(travel) == 0
                ),
                host,
                log,
            )

            # And the health endpoint reports the job counts through the Cosmos adapter
            with urllib.request.urlopen(f"{url}/api/health", timeout=30) as response:  # noqa: S310 -- 127.0.0.1
                assert json.loads(response.read())["jobs"] == {"indexed": 4, "deleted": 1}
    finally:
        services.close()
        uploads.close()


def test_faults_in_every_service_delay_files_but_lose_none(emulators: Emulators, tmp_path: Path) -> None:
    """Throttling and outages in Cosmos DB, AI Search and embeddings: every file still ends indexed once."""
    env = emulators.env
    uploads, services = prepared(env)
    throttled_before = THROTTLED.snapshot().get("cosmos", 0)
    # Given every service failing for a while, more often than one SDK call retries (2 retries)
    emulators.cosmos.fail_next(4, 429, headers={"x-ms-retry-after-ms": "200"})
    emulators.cosmos.fail_next(3, 503)
    emulators.embeddings.fail_next(2, 429, retry_after_s=0.3)
    emulators.embeddings.fail_next(4, 503)
    emulators.search.fail_next(4, 503, path="search.index")
    emulators.search.fail_next(1, 429, retry_after_ms="300", path="search.index")
    log = tmp_path / "host.log"
    url = f"http://127.0.0.1:{env['INGEST_HOST_PORT']}"
    try:
        with running_host(env, log) as host:
            # When the host ingests the samples through the faults
            wait_until(lambda: statuses(services) == {s.name: JobStatus.INDEXED for s in SAMPLES}, host, log)
            # Then every file is indexed exactly once, of its current version
            assert_index_holds_each_jobs_version(services)
            assert emulators.cosmos.faults_served == 7
            # And the SDKs' own retries were counted, per service, for the health endpoint
            with urllib.request.urlopen(f"{url}/api/health", timeout=30) as response:  # noqa: S310 -- 127.0.0.1
                health = json.loads(response.read())
            retried = health["sdk_retries"]
            assert {"cosmos", "openai", "search"} <= set(retried), retried
            # And so were the 429s each service answered (the throttling metric reads these counts)
            # (this test's own Cosmos reads may meet some of the 429s: together they met all four)
            throttled = health["throttled"]
            ours = THROTTLED.snapshot().get("cosmos", 0) - throttled_before
            assert throttled.get("cosmos", 0) + ours == 4, (throttled, ours)
            assert throttled.get("openai") == 2 and throttled.get("search") == 1, throttled
            # And every injected fault was met; those that outlasted the SDKs' retries were retried on
            # durable timers, which the jobs' trails show
            assert sum(record.outcome == "fault" for record in emulators.embeddings.records) == 6
            failed_writes = [r for r in emulators.search.requests if "search.index" in r.path and r.status != 200]
            assert len(failed_writes) == 5
            notes = [entry.note for job in all_jobs(services.jobs) for entry in job.trail]
            assert any(note.endswith(": transient, retrying") for note in notes), notes
    finally:
        services.close()
        uploads.close()
