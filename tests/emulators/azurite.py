"""Azurite, the Blob Storage emulator: one server per test session, a fresh container per test.

``azurite`` (a session fixture) starts ``azurite-blob`` in memory on a free port. The factories
``azure_blob_source`` and ``azure_artifact_store`` (called by ``tests/integration/conftest.py`` for
its "azure" parameter) create a container with a unique name for one test and delete it afterwards;
the adapters reach it through ``connect_container``, the same wiring production uses.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from azure.core.exceptions import ResourceNotFoundError
from azure.storage.blob import ContainerClient

from ingestion.adapters.azure_artifacts import AzureArtifactStore
from ingestion.adapters.azure_blob import AzureBlobSource, connect_container
from ingestion.ports import BlobInfo
from tests.emulators.process import HOST, ServerProcess, ServerUnavailable, free_port, node_bin, unavailable

ACCOUNT = "devstoreaccount1"
# Azurite's published development key (in its README and every Azure Storage sample): not a secret.
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


@dataclass(frozen=True)
class Azurite:
    """A running Azurite blob service."""

    port: int

    @property
    def blob_endpoint(self) -> str:
        return f"http://{HOST}:{self.port}/{ACCOUNT}"

    @property
    def connection_string(self) -> str:
        return connection_string(self.blob_endpoint)

    def connect(self, container: str, **options: Any) -> ContainerClient:
        """A client for ``container``, built as production builds it."""
        return connect_container(container=container, connection_string=self.connection_string, **options)

    def fresh_container(self, request: pytest.FixtureRequest, stem: str, **options: Any) -> ContainerClient:
        """A new, empty container named ``<stem>-<random>``, deleted when the test ends."""
        client = self.connect(f"{stem}-{uuid.uuid4().hex[:16]}", **options)
        client.create_container()  # tests create containers; production code never does

        def remove() -> None:
            with contextlib.suppress(ResourceNotFoundError):  # the test removed it itself
                client.delete_container()

        request.addfinalizer(remove)
        return client


def connection_string(blob_endpoint: str, key: str = ACCOUNT_KEY) -> str:
    """A connection string for the development account at ``blob_endpoint``."""
    return f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={key};BlobEndpoint={blob_endpoint};"


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    """Azurite's blob service, in memory, for the whole session."""
    port = free_port()
    try:
        command: list[str | Path] = [
            node_bin("azurite-blob"),
            *("--blobHost", HOST, "--blobPort", str(port)),
            "--skipApiVersionCheck",  # current azure-storage-blob speaks a newer API version than Azurite knows
            "--inMemoryPersistence",
            "--disableTelemetry",
            "--silent",
        ]
        server = ServerProcess("azurite", command, port, tmp_path_factory.mktemp("azurite")).start()
    except ServerUnavailable as error:
        unavailable("Azurite", str(error))
    try:
        yield Azurite(port)
    finally:
        server.stop()


class AzuriteBlobSource(AzureBlobSource):
    """The Azure blob source, plus the writes users make (upload, delete) for the tests."""

    def __init__(self, container_client: ContainerClient, *, page_size: int = 5000) -> None:
        super().__init__(container_client, page_size=page_size)
        self.container_client = container_client

    def put(self, path: str, data: bytes, last_modified: datetime | None = None) -> BlobInfo:
        """Upload (or overwrite) a blob; returns its new version."""
        if last_modified is not None:
            # The service stamps Last-Modified itself; no API sets it. Refuse rather than pretend.
            raise NotImplementedError("Blob Storage cannot set a blob's Last-Modified")
        self.container_client.upload_blob(path, data, overwrite=True)
        return self.properties(path)

    def delete(self, path: str) -> bool:
        """Remove a blob; ``False`` when there was none."""
        try:
            self.container_client.delete_blob(path)
        except ResourceNotFoundError:
            return False
        return True


def azure_blob_source(request: pytest.FixtureRequest) -> AzuriteBlobSource:
    """An Azure blob source over a fresh container (for the "azure" parameter of ``blobs``)."""
    server: Azurite = request.getfixturevalue("azurite")
    return AzuriteBlobSource(server.fresh_container(request, "uploads"))


def azure_artifact_store(request: pytest.FixtureRequest) -> AzureArtifactStore:
    """An Azure artifact store over a fresh container (for the "azure" parameter of ``artifacts``)."""
    server: Azurite = request.getfixturevalue("azurite")
    return AzureArtifactStore(server.fresh_container(request, "ingestion-artifacts"))
