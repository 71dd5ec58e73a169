"""The composition root: builds every adapter once from ``Settings``."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from ingestion.adapters.local_artifacts import FolderArtifactStore
from ingestion.adapters.local_blob import FolderBlobSource
from ingestion.adapters.local_embedder import HashingEmbedder
from ingestion.adapters.sqlite_index import SqliteSearchIndex
from ingestion.adapters.sqlite_jobs import SqliteJobStore
from ingestion.config import Settings, SettingsError
from ingestion.services import Services
from ingestion.tokens import Tokenizer


def build_services(settings: Settings) -> Services:
    """The embedded profile: a folder of files, a folder of artifacts, SQLite and a local embedder."""
    if settings.profile != "embedded":
        raise ValueError(f"profile {settings.profile!r} is not available yet")
    data = settings.data_dir
    data.mkdir(parents=True, exist_ok=True)
    tokenizer = Tokenizer(settings.chunking.encoding, settings.tiktoken_cache_dir)
    embedder = HashingEmbedder(settings.embedding.dimensions, tokenizer)
    if settings.chunking.target_tokens > embedder.max_input_tokens:
        raise SettingsError(
            f"INGEST_CHUNK_TOKENS={settings.chunking.target_tokens} is over the embedding model's input "
            f"limit of {embedder.max_input_tokens} tokens"
        )
    jobs = SqliteJobStore(data / "jobs.sqlite3")
    index = SqliteSearchIndex(data / "index.sqlite3", settings.embedding.dimensions)
    return Services(
        settings=settings,
        blobs=FolderBlobSource(settings.inbox_dir, settings.container),
        artifacts=FolderArtifactStore(data / "artifacts"),
        jobs=jobs,
        index=index,
        embedder=embedder,
        tokenizer=tokenizer,
        closers=(jobs.close, index.close),
    )


# ------------------------------------------------------------------ the app's shared services
# function_app.py builds its services on first use (Flex Consumption gives an app 30 s to start,
# and a settings error should surface in a response, not at import). Tests and the local host put
# their own services in its place with ``using_services`` instead of patching the module.

_lock = threading.Lock()
_shared: Services | None = None


def shared_services() -> Services:
    """The services every function of the app uses: built once from the environment."""
    global _shared  # noqa: PLW0603 -- one composition root per process, guarded by the lock
    with _lock:
        if _shared is None:
            _shared = build_services(Settings.from_env())
        return _shared


@contextmanager
def using_services(services: Services) -> Iterator[Services]:
    """Make ``services`` the shared ones for the duration (tests, the local host's CLI)."""
    global _shared  # noqa: PLW0603 -- see shared_services
    with _lock:
        previous, _shared = _shared, services
    try:
        yield services
    finally:
        with _lock:
            _shared = previous


def reset_shared_services() -> None:
    """Close and forget the shared services; the next use builds them again from the environment."""
    global _shared
    with _lock:
        current, _shared = _shared, None
    if current is not None:
        current.close()
