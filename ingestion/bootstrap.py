"""The composition root: builds every adapter once from ``Settings``."""

from __future__ import annotations

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
