"""The local Azure AI Search service for tests (a pytest plugin, registered in ``tests/conftest.py``).

``search_server`` runs ``tests.emulators.search_server`` in this process on a free port for the whole
session; tests inject faults and read its request log directly. ``azure_search_index`` gives a test
a fresh index (created by the deploy step's ``ensure_index``, deleted afterwards) behind the real
``AzureSearchIndex`` and azure-search-documents, over HTTP.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from ingestion.adapters.azure_search import AzureSearchIndex, connect_search, ensure_index
from tests.emulators.process import unavailable
from tests.emulators.search_server import SearchServer

API_KEY = "local-search-test-key"
SEMANTIC_CONFIGURATION = "chunks-semantic"


@pytest.fixture(scope="session")
def search_server() -> Iterator[SearchServer]:
    """The local AI Search service, listening on 127.0.0.1 for the session."""
    try:
        server = SearchServer(api_key=API_KEY).start()
    except OSError as error:
        unavailable("the local AI Search server", str(error))
    yield server
    server.stop()


def unique_index_name(prefix: str = "chunks") -> str:
    """A fresh index name (lowercase letters, digits and dashes, as the service requires)."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def azure_search_index(request: pytest.FixtureRequest, dimensions: int) -> Iterator[AzureSearchIndex]:
    """A fresh index on the local server behind ``AzureSearchIndex``; deleted at teardown."""
    server: SearchServer = request.getfixturevalue("search_server")
    server.reset()  # a fault left behind by an earlier test must not leak into this one
    name = unique_index_name()
    client, index_client = connect_search(endpoint=server.url, index=name, key=server.api_key, retries=0)
    ensure_index(index_client, name, dimensions, SEMANTIC_CONFIGURATION)
    try:
        yield AzureSearchIndex(client, dimensions=dimensions)
    finally:
        index_client.delete_index(name)
        client.close()
        index_client.close()
