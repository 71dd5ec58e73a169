"""The whole pipeline on the "emulators" profile: Azurite, the Cosmos DB emulator and the local AI
Search and embeddings servers, selected by settings alone.

The local host (``python -m ingestion.devhost``) runs ``function_app.py`` in its own process with
``INGEST_PROFILE=azure`` and the services' endpoints and keys: its watcher polls the Azurite
container, and every stage reads and writes through the Azure adapters and the real SDKs. The index
is created by the deploy step, ``python -m ingestion index ensure``, as in a deployment.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from azure.storage.blob import BlobServiceClient

from ingestion.api import all_jobs
from ingestion.bootstrap import build_services
from ingestion.cli import post_search
from ingestion.config import Settings
from ingestion.model import DocumentRef, JobStatus
from ingestion.services import Services
from tests.conftest import REPO
from tests.emulators.azurite import Azurite
from tests.emulators.cosmos import CosmosEmulator, fresh_database
from tests.emulators.cosmos_proxy import CosmosProxy
from tests.emulators.embeddings import API_KEY as EMBEDDINGS_KEY
from tests.emulators.embeddings_server import EmbeddingsServer
from tests.emulators.process import free_port
from tests.emulators.search_server import SearchServer

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
WAIT_S = 180.0
SAMPLES = sorted(path for path in (REPO / "samples").iterdir() if path.is_file())


@pytest.fixture
def emulators_env(
    azurite: Azurite,
    cosmos_emulator: CosmosEmulator,
    search_server: SearchServer,
    embeddings_server: EmbeddingsServer,
    tmp_path: Path,
) -> Iterator[dict[str, str]]:
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
            env = {key: value for key, value in os.environ.items() if not key.startswith(("INGEST_", "UploadsStorage"))}
            env |= {
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
            yield env
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


def wait_until(condition: Callable[[], bool], host: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert host.poll() is None, log.read_text(errors="replace")[-5000:]
        assert time.monotonic() < deadline, log.read_text(errors="replace")[-5000:]
        time.sleep(0.2)


def statuses(services: Services) -> dict[str, JobStatus]:
    return {job.path: job.status for job in all_jobs(services.jobs)}


def test_the_pipeline_runs_end_to_end_on_the_emulators(emulators_env: dict[str, str], tmp_path: Path) -> None:
    """Samples uploaded to Azurite are indexed and searchable; an overwrite re-indexes; a delete removes."""
    env = emulators_env
    # Given the index created by the deploy step (twice: the second run changes nothing)
    first, second = cli(env, "index", "ensure"), cli(env, "index", "ensure")
    assert (first.returncode, second.returncode) == (0, 0), first.stderr + second.stderr
    assert first.stdout.strip().endswith("created")
    assert second.stdout.strip().endswith("unchanged")
    # And the samples uploaded to the uploads container
    storage = BlobServiceClient.from_connection_string(env["UploadsStorage"])
    uploads = storage.get_container_client(env["INGEST_CONTAINER"])
    for sample in SAMPLES:
        uploads.upload_blob(sample.name, sample.read_bytes())
    services = build_services(Settings.from_env(env))  # the same adapters, to look at the result
    log = tmp_path / "host.log"
    with log.open("wb") as out:
        host = subprocess.Popen(
            [sys.executable, "-m", "ingestion.devhost"], cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{env['INGEST_HOST_PORT']}"
    try:
        # When the host runs, every sample ends indexed
        wait_until(lambda: statuses(services) == {s.name: JobStatus.INDEXED for s in SAMPLES}, host, log)
        # Then the chatbot's search finds the answer, with its citation
        hits = post_search(url, "how many days do I have to return an item?", timeout_s=30)
        assert hits[0]["path"] == "return-policy.pdf"
        # And every chunk in the index belongs to the version its job recorded
        for job in all_jobs(services.jobs):
            held = list(services.index.ids_for_doc(job.doc_id))
            assert len(held) == job.chunk_count > 0
            assert {version for _, version in held} == {job.version.content_hash}

        # When a file is overwritten, its new content replaces the old
        uploads.upload_blob("price-list.csv", b"sku,product,price_eur\nNW-GL,Glacier lantern,59\n", overwrite=True)
        price_list = DocumentRef(env["INGEST_CONTAINER"], "price-list.csv").doc_id
        new_etag = uploads.get_blob_client("price-list.csv").get_blob_properties().etag

        def reindexed() -> bool:
            job = services.jobs.get(price_list)
            return (
                job is not None
                and job.status is JobStatus.INDEXED
                and job.version.etag.strip('"') == new_etag.strip('"')
            )

        wait_until(reindexed, host, log)
        assert any(hit["path"] == "price-list.csv" for hit in post_search(url, "glacier lantern", timeout_s=30))
        job = services.jobs.get(price_list)
        assert job is not None
        assert {version for _, version in services.index.ids_for_doc(price_list)} == {job.version.content_hash}

        # When a file is deleted, its job says so and its chunks leave the index
        uploads.delete_blob("travel-policy.md")
        travel = DocumentRef(env["INGEST_CONTAINER"], "travel-policy.md").doc_id
        wait_until(lambda: statuses(services).get("travel-policy.md") is JobStatus.DELETED, host, log)
        assert services.index.count_for_doc(travel) == 0

        # And the health endpoint reports the job counts through the Cosmos adapter
        with urllib.request.urlopen(f"{url}/api/health", timeout=30) as response:  # noqa: S310 -- 127.0.0.1
            assert b'"indexed": 4' in response.read()
    finally:
        host.send_signal(signal.SIGTERM)
        host.wait(timeout=60)
        services.close()
        storage.close()
    assert host.returncode == 0, log.read_text(errors="replace")[-5000:]
