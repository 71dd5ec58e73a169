"""The composition root: builds every adapter once from ``Settings``.

The Azure SDKs are imported only when the settings ask for them, so the embedded profile starts
without them (and fast).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from ingestion.adapters.local_artifacts import FolderArtifactStore
from ingestion.adapters.local_blob import FolderBlobSource
from ingestion.adapters.local_dead_letters import POISON_FILE, FileDeadLetters
from ingestion.adapters.local_embedder import HashingEmbedder
from ingestion.adapters.sqlite_index import SqliteSearchIndex
from ingestion.adapters.sqlite_jobs import SqliteJobStore
from ingestion.config import Settings, SettingsError
from ingestion.ports import Embedder, JobStore
from ingestion.services import Adapters, Services
from ingestion.telemetry import JOB_COUNTS, instrument, untraced
from ingestion.tokens import Tokenizer


def build_services(settings: Settings) -> Services:
    """The adapters ``settings.profile`` names: "embedded" (a folder, SQLite, local files) or "azure",
    each port wrapped so that its calls are spans (``telemetry.instrument``)."""
    tokenizer = Tokenizer(settings.chunking.encoding, settings.tiktoken_cache_dir)
    embedder, embedder_closers = build_embedder(settings, tokenizer)
    try:
        if settings.chunking.target_tokens > embedder.max_input_tokens:
            raise SettingsError(
                f"INGEST_CHUNK_TOKENS={settings.chunking.target_tokens} is over the embedding model's input "
                f"limit of {embedder.max_input_tokens} tokens"
            )
        if settings.profile == "azure":
            from ingestion.adapters.azure_profile import azure_adapters  # noqa: PLC0415 -- Azure SDKs only when used

            adapters = azure_adapters(settings)
        else:
            adapters = _embedded_adapters(settings)
    except BaseException:
        for close in embedder_closers:  # the next shared_services() call builds a new one
            close()
        raise
    return instrument(
        Services(
            settings=settings,
            blobs=adapters.blobs,
            artifacts=adapters.artifacts,
            jobs=adapters.jobs,
            index=adapters.index,
            embedder=embedder,
            tokenizer=tokenizer,
            closers=adapters.closers + embedder_closers,
            dead_letters=adapters.dead_letters,
        )
    )


def _embedded_adapters(settings: Settings) -> Adapters:
    """A folder of files, a folder of artifacts, SQLite, and the local host's poison events."""
    data = settings.data_dir
    data.mkdir(parents=True, exist_ok=True)
    jobs = SqliteJobStore(data / "jobs.sqlite3")
    index = SqliteSearchIndex(data / "index.sqlite3", settings.embedding.dimensions)
    return Adapters(
        blobs=FolderBlobSource(settings.inbox_dir, settings.container),
        artifacts=FolderArtifactStore(data / "artifacts"),
        jobs=jobs,
        index=index,
        closers=(jobs.close, index.close),
        dead_letters=FileDeadLetters(data / POISON_FILE),
    )


def build_embedder(settings: Settings, tokenizer: Tokenizer) -> tuple[Embedder, tuple[Callable[[], None], ...]]:
    """The local hashing embedder, or Azure OpenAI / an OpenAI-compatible endpoint (any profile),
    with what closes it."""
    if settings.embedding.kind == "hashing":
        return HashingEmbedder(settings.embedding.dimensions, tokenizer), ()
    from ingestion.adapters.azure_profile import openai_embedder  # noqa: PLC0415 -- the SDK only when used

    return openai_embedder(settings, tokenizer)


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


def _shared_jobs() -> JobStore | None:
    """The shared services' job store, for the jobs gauge; ``None`` before they are built."""
    services = _shared
    return None if services is None else untraced(services.jobs)


JOB_COUNTS.watch(_shared_jobs)


def reset_shared_services() -> None:
    """Close and forget the shared services; the next use builds them again from the environment."""
    global _shared
    with _lock:
        current, _shared = _shared, None
    if current is not None:
        current.close()
