"""The local embeddings server for the OpenAI embedder's tests (a pytest plugin, see tests/conftest.py).

``embeddings_server`` runs ``EmbeddingsServer`` in-process on a thread for the whole session;
``openai_embedder`` (the "azure" parameter of the embedder contract tests) resets it and builds the
embedder the app would build, through ``connect_embedder`` and the real SDK over HTTP.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from ingestion.adapters.openai_embedder import OpenAIEmbedder, connect_embedder
from ingestion.tokens import Tokenizer
from tests.emulators.embeddings_server import EmbeddingsServer
from tests.emulators.process import unavailable

API_KEY = "emulator-key"
DEPLOYMENT = "text-embedding-3-small"
DIMENSIONS = 256  # as the other implementations' fixture
GENEROUS: dict[str, Any] = {"tokens_per_minute": 100_000_000, "requests_per_minute": 1_000_000}


@pytest.fixture(scope="session")
def embeddings_server(tokenizer: Tokenizer) -> Iterator[EmbeddingsServer]:
    try:
        server = EmbeddingsServer(tokenizer, api_key=API_KEY).start()
    except OSError as error:
        unavailable("embeddings server", str(error))
    yield server
    server.stop()


def openai_embedder(request: pytest.FixtureRequest, tokenizer: Tokenizer) -> OpenAIEmbedder:
    """An ``OpenAIEmbedder`` on the (freshly reset) server's Azure route, with generous quotas."""
    server: EmbeddingsServer = request.getfixturevalue("embeddings_server")
    server.reset()
    embedder = connect_embedder(
        kind="azure_openai",
        endpoint=server.url,
        model=DEPLOYMENT,
        dimensions=DIMENSIONS,
        tokenizer=tokenizer,
        api_key=API_KEY,
        retries=0,
        timeout_s=30.0,
        **GENEROUS,
    )
    request.addfinalizer(embedder.close)
    return embedder
