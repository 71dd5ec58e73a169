"""Settings: the only place that reads the environment.

``Settings.from_env()`` reads ``INGEST_*`` variables (names below, next to each field), applies
defaults that run the whole pipeline on one machine, and fails fast naming any variable whose value
it cannot use.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from ingestion.retry import RetryPolicy

T = TypeVar("T")


class SettingsError(ValueError):
    """A variable is missing or has a value that cannot be used."""


@dataclass(frozen=True)
class ParseLimits:
    """Bounds on what one file may cost (ARCHITECTURE.md, "Bounded resources")."""

    max_file_bytes: int = 200 * 1024 * 1024  # INGEST_MAX_FILE_MB
    max_pages: int = 5000  # INGEST_MAX_PAGES
    max_unzipped_bytes: int = 1024 * 1024 * 1024  # INGEST_MAX_UNZIPPED_MB: Office/EPUB zip bombs
    max_text_chars: int = 50_000_000  # INGEST_MAX_TEXT_CHARS: extracted text per file
    timeout_s: float = 120.0  # INGEST_PARSE_TIMEOUT_S: wall clock per file, in the child process
    memory_mb: int = 2048  # INGEST_PARSE_MEMORY_MB: address-space cap of the parse child
    isolation: str = "process"  # INGEST_PARSE_ISOLATION: "process" (default) or "inline" (tests)


@dataclass(frozen=True)
class ChunkingSettings:
    target_tokens: int = 512  # INGEST_CHUNK_TOKENS
    overlap_tokens: int = 64  # INGEST_CHUNK_OVERLAP_TOKENS
    encoding: str = "cl100k_base"  # INGEST_TOKENIZER: what text-embedding-3-* and ada-002 use


EMBEDDERS = ("hashing", "azure_openai", "openai")


@dataclass(frozen=True)
class EmbeddingSettings:
    kind: str = "hashing"  # INGEST_EMBEDDER: "hashing" (local), "azure_openai", or "openai" (any compatible endpoint)
    dimensions: int = 384  # INGEST_EMBED_DIMENSIONS
    batch_inputs: int = 256  # INGEST_EMBED_BATCH_INPUTS (Azure OpenAI allows 2,048)
    batch_tokens: int = 100_000  # INGEST_EMBED_BATCH_TOKENS (Azure OpenAI allows 300,000)
    endpoint: str = ""  # INGEST_OPENAI_ENDPOINT: https://<resource>.openai.azure.com, or a base URL (".../v1")
    deployment: str = "text-embedding-3-small"  # INGEST_OPENAI_DEPLOYMENT: deployment (Azure) or model name
    api_version: str = "2024-10-21"  # INGEST_OPENAI_API_VERSION (Azure OpenAI data plane, GA)
    api_key: str = field(default="", repr=False)  # INGEST_OPENAI_API_KEY: else Microsoft Entra ID (managed identity)
    # The deployment's quota (Azure: text-embedding-3-small Standard defaults to 350k TPM / 2,100 RPM).
    # Every process paces itself to these, so with N instances give each 1/N of the deployment's quota.
    tokens_per_minute: int = 350_000  # INGEST_EMBED_TPM
    requests_per_minute: int = 2_100  # INGEST_EMBED_RPM


@dataclass(frozen=True)
class IndexSettings:
    batch_docs: int = 1000  # INGEST_INDEX_BATCH_DOCS (service limit 1,000)
    batch_bytes: int = 8 * 1024 * 1024  # INGEST_INDEX_BATCH_MB (service limit 16 MB)


@dataclass(frozen=True)
class AzureSettings:
    """Where the Azure services are (profile "azure"). Keys only when configured; else managed identity.

    The uploads account is read from the blob trigger's own connection (``UploadsStorage``: a
    connection string, or ``UploadsStorage__blobServiceUri`` / ``__serviceUri`` with an identity), so
    the trigger and the adapters cannot disagree about which account they watch.
    """

    storage_connection_string: str = field(default="", repr=False)  # UploadsStorage
    storage_account_url: str = ""  # UploadsStorage__blobServiceUri (or UploadsStorage__serviceUri)
    artifacts_container: str = "ingestion-artifacts"  # INGEST_ARTIFACTS_CONTAINER (same account)
    dead_letter_container: str = ""  # INGEST_DEADLETTER_CONTAINER: Event Grid's dead-letter destination
    cosmos_endpoint: str = ""  # INGEST_COSMOS_ENDPOINT
    cosmos_key: str = field(default="", repr=False)  # INGEST_COSMOS_KEY
    cosmos_database: str = "ingestion"  # INGEST_COSMOS_DATABASE
    cosmos_container: str = "jobs"  # INGEST_COSMOS_CONTAINER
    cosmos_endpoint_discovery: bool = True  # INGEST_COSMOS_ENDPOINT_DISCOVERY (false for the emulator)
    search_endpoint: str = ""  # INGEST_SEARCH_ENDPOINT
    search_key: str = field(default="", repr=False)  # INGEST_SEARCH_KEY
    search_index: str = "chunks"  # INGEST_SEARCH_INDEX
    semantic_configuration: str = ""  # INGEST_SEARCH_SEMANTIC_CONFIG: name, or empty for no semantic ranker
    sdk_retries: int = 2  # INGEST_SDK_RETRIES: quick retries inside one call; longer waits are durable timers
    sdk_timeout_s: float = 30.0  # INGEST_SDK_TIMEOUT_S: per request

    def missing(self, embedder: str) -> list[str]:
        """The settings the azure profile needs that are not set."""
        needed = {
            "UploadsStorage (or UploadsStorage__blobServiceUri)": self.storage_connection_string
            or self.storage_account_url,
            "INGEST_COSMOS_ENDPOINT": self.cosmos_endpoint,
            "INGEST_SEARCH_ENDPOINT": self.search_endpoint,
        }
        return [name for name, value in needed.items() if not value] + (
            ["INGEST_EMBEDDER (azure_openai or openai)"] if embedder == "hashing" else []
        )


@dataclass(frozen=True)
class ReconcileSettings:
    """The reconciler (``ingestion/reconcile.py``): when it runs and how much one pass does."""

    schedule: str = "0 */5 * * * *"  # INGEST_RECONCILE_SCHEDULE: NCRONTAB, read by the timer binding
    # INGEST_RECONCILE_LEASE_S: in progress with no progress this long = stuck. Neither the job nor
    # the orchestration moves while an activity waits in Durable's queue, so this must exceed the
    # worst queue wait under a backlog (activities themselves end within functionTimeout, 10 min).
    lease_s: float = 3600.0
    settle_s: float = 120.0  # INGEST_RECONCILE_SETTLE_S: younger jobs may just be starting
    page_size: int = 500  # INGEST_RECONCILE_PAGE: items per listing request
    max_items: int = 20_000  # INGEST_RECONCILE_MAX_ITEMS: per sweep and pass; the next pass resumes
    terminate_wait_s: float = 30.0  # INGEST_RECONCILE_TERMINATE_WAIT_S: for a stuck instance to end
    artifact_retention_days: float = 7.0  # INGEST_ARTIFACT_RETENTION_DAYS: old versions' checkpoints
    history_retention_days: float = 30.0  # INGEST_HISTORY_RETENTION_DAYS: finished orchestrations


@dataclass(frozen=True)
class HostSettings:
    """The local host (``ingestion.devhost``): where it listens and how much it runs at once."""

    port: int = 7071  # INGEST_HOST_PORT (0 picks a free port)
    activity_workers: int = 2  # INGEST_ACTIVITY_WORKERS: activities running at once
    watch_interval_s: float = 0.5  # INGEST_WATCH_INTERVAL_S: how often the inbox folder is scanned


@dataclass(frozen=True)
class Settings:
    profile: str = "embedded"  # INGEST_PROFILE: "embedded" (one machine) or "azure" (also the emulators)
    container: str = "uploads"  # INGEST_CONTAINER
    inbox_dir: Path = Path("inbox")  # INGEST_INBOX_DIR: the embedded blob source
    data_dir: Path = Path(".ingestion")  # INGEST_DATA_DIR: artifacts, SQLite files
    tiktoken_cache_dir: Path = Path(tempfile.gettempdir()) / "ingestion-tiktoken"  # TIKTOKEN_CACHE_DIR
    max_redrives: int = 5  # INGEST_MAX_REDRIVES: re-drives of a retry_later job before it needs review
    limits: ParseLimits = field(default_factory=ParseLimits)
    chunking: ChunkingSettings = field(default_factory=ChunkingSettings)
    embedding: EmbeddingSettings = field(default_factory=EmbeddingSettings)
    index: IndexSettings = field(default_factory=IndexSettings)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    host: HostSettings = field(default_factory=HostSettings)
    azure: AzureSettings = field(default_factory=AzureSettings)
    reconcile: ReconcileSettings = field(default_factory=ReconcileSettings)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        read = _Reader(env)
        defaults = cls()
        limits, chunking, embedding, index = ParseLimits(), ChunkingSettings(), EmbeddingSettings(), IndexSettings()
        retry, host, azure, reconcile = RetryPolicy(), HostSettings(), AzureSettings(), ReconcileSettings()
        settings = cls(
            profile=read("INGEST_PROFILE", str, defaults.profile, choices=("embedded", "azure")),
            container=read("INGEST_CONTAINER", str, defaults.container),
            inbox_dir=read("INGEST_INBOX_DIR", Path, defaults.inbox_dir),
            data_dir=read("INGEST_DATA_DIR", Path, defaults.data_dir),
            tiktoken_cache_dir=read("TIKTOKEN_CACHE_DIR", Path, defaults.tiktoken_cache_dir),
            max_redrives=read("INGEST_MAX_REDRIVES", _natural_int, defaults.max_redrives),
            limits=ParseLimits(
                max_file_bytes=read("INGEST_MAX_FILE_MB", _mebibytes, limits.max_file_bytes),
                max_pages=read("INGEST_MAX_PAGES", _positive_int, limits.max_pages),
                max_unzipped_bytes=read("INGEST_MAX_UNZIPPED_MB", _mebibytes, limits.max_unzipped_bytes),
                max_text_chars=read("INGEST_MAX_TEXT_CHARS", _positive_int, limits.max_text_chars),
                timeout_s=read("INGEST_PARSE_TIMEOUT_S", _positive_float, limits.timeout_s),
                memory_mb=read("INGEST_PARSE_MEMORY_MB", _positive_int, limits.memory_mb),
                isolation=read("INGEST_PARSE_ISOLATION", str, limits.isolation, choices=("process", "inline")),
            ),
            chunking=ChunkingSettings(
                target_tokens=read("INGEST_CHUNK_TOKENS", _positive_int, chunking.target_tokens),
                overlap_tokens=read("INGEST_CHUNK_OVERLAP_TOKENS", _natural_int, chunking.overlap_tokens),
                encoding=read("INGEST_TOKENIZER", str, chunking.encoding, choices=("cl100k_base", "o200k_base")),
            ),
            embedding=EmbeddingSettings(
                kind=read("INGEST_EMBEDDER", str, embedding.kind, choices=EMBEDDERS),
                dimensions=read("INGEST_EMBED_DIMENSIONS", _positive_int, embedding.dimensions),
                batch_inputs=read("INGEST_EMBED_BATCH_INPUTS", _positive_int, embedding.batch_inputs),
                batch_tokens=read("INGEST_EMBED_BATCH_TOKENS", _positive_int, embedding.batch_tokens),
                endpoint=read("INGEST_OPENAI_ENDPOINT", str, embedding.endpoint),
                deployment=read("INGEST_OPENAI_DEPLOYMENT", str, embedding.deployment),
                api_version=read("INGEST_OPENAI_API_VERSION", str, embedding.api_version),
                api_key=read("INGEST_OPENAI_API_KEY", str, embedding.api_key),
                tokens_per_minute=read("INGEST_EMBED_TPM", _positive_int, embedding.tokens_per_minute),
                requests_per_minute=read("INGEST_EMBED_RPM", _positive_int, embedding.requests_per_minute),
            ),
            index=IndexSettings(
                batch_docs=read("INGEST_INDEX_BATCH_DOCS", _positive_int, index.batch_docs),
                batch_bytes=read("INGEST_INDEX_BATCH_MB", _mebibytes, index.batch_bytes),
            ),
            retry=RetryPolicy(
                attempts=read("INGEST_RETRY_ATTEMPTS", _positive_int, retry.attempts),
                first_delay_s=read("INGEST_RETRY_FIRST_DELAY_S", _positive_float, retry.first_delay_s),
                max_delay_s=read("INGEST_RETRY_MAX_DELAY_S", _positive_float, retry.max_delay_s),
                retry_later_s=read("INGEST_RETRY_LATER_S", _positive_float, retry.retry_later_s),
            ),
            host=HostSettings(
                port=read("INGEST_HOST_PORT", _natural_int, host.port),
                activity_workers=read("INGEST_ACTIVITY_WORKERS", _positive_int, host.activity_workers),
                watch_interval_s=read("INGEST_WATCH_INTERVAL_S", _positive_float, host.watch_interval_s),
            ),
            azure=AzureSettings(
                storage_connection_string=read("UploadsStorage", str, azure.storage_connection_string),
                storage_account_url=read(
                    "UploadsStorage__blobServiceUri", str, read("UploadsStorage__serviceUri", str, "")
                ),
                artifacts_container=read("INGEST_ARTIFACTS_CONTAINER", str, azure.artifacts_container),
                dead_letter_container=read("INGEST_DEADLETTER_CONTAINER", str, azure.dead_letter_container),
                cosmos_endpoint=read("INGEST_COSMOS_ENDPOINT", str, azure.cosmos_endpoint),
                cosmos_key=read("INGEST_COSMOS_KEY", str, azure.cosmos_key),
                cosmos_database=read("INGEST_COSMOS_DATABASE", str, azure.cosmos_database),
                cosmos_container=read("INGEST_COSMOS_CONTAINER", str, azure.cosmos_container),
                cosmos_endpoint_discovery=read(
                    "INGEST_COSMOS_ENDPOINT_DISCOVERY", _boolean, azure.cosmos_endpoint_discovery
                ),
                search_endpoint=read("INGEST_SEARCH_ENDPOINT", str, azure.search_endpoint),
                search_key=read("INGEST_SEARCH_KEY", str, azure.search_key),
                search_index=read("INGEST_SEARCH_INDEX", str, azure.search_index),
                semantic_configuration=read("INGEST_SEARCH_SEMANTIC_CONFIG", str, azure.semantic_configuration),
                sdk_retries=read("INGEST_SDK_RETRIES", _natural_int, azure.sdk_retries),
                sdk_timeout_s=read("INGEST_SDK_TIMEOUT_S", _positive_float, azure.sdk_timeout_s),
            ),
            reconcile=ReconcileSettings(
                schedule=read("INGEST_RECONCILE_SCHEDULE", str, reconcile.schedule),
                lease_s=read("INGEST_RECONCILE_LEASE_S", _positive_float, reconcile.lease_s),
                settle_s=read("INGEST_RECONCILE_SETTLE_S", _natural_float, reconcile.settle_s),
                page_size=read("INGEST_RECONCILE_PAGE", _positive_int, reconcile.page_size),
                max_items=read("INGEST_RECONCILE_MAX_ITEMS", _positive_int, reconcile.max_items),
                terminate_wait_s=read("INGEST_RECONCILE_TERMINATE_WAIT_S", _positive_float, reconcile.terminate_wait_s),
                artifact_retention_days=read(
                    "INGEST_ARTIFACT_RETENTION_DAYS", _natural_float, reconcile.artifact_retention_days
                ),
                history_retention_days=read(
                    "INGEST_HISTORY_RETENTION_DAYS", _natural_float, reconcile.history_retention_days
                ),
            ),
        )
        if settings.chunking.overlap_tokens * 2 > settings.chunking.target_tokens:
            raise SettingsError("INGEST_CHUNK_OVERLAP_TOKENS must be at most half of INGEST_CHUNK_TOKENS")
        if settings.index.batch_docs > 1000:
            raise SettingsError("INGEST_INDEX_BATCH_DOCS must be at most 1000 (the service limit)")
        if settings.profile == "azure" and (missing := settings.azure.missing(settings.embedding.kind)):
            raise SettingsError(f"INGEST_PROFILE=azure needs {', '.join(missing)}")
        if settings.embedding.kind != "hashing" and not settings.embedding.endpoint:
            raise SettingsError(f"INGEST_EMBEDDER={settings.embedding.kind} needs INGEST_OPENAI_ENDPOINT")
        return settings


TELEMETRY_EXPORTERS = ("auto", "azure_monitor", "otlp", "console", "none")


@dataclass(frozen=True)
class TelemetrySettings:
    """Where traces, metrics and the project's logs go. Read apart from ``Settings``: telemetry must
    start even when the other settings are wrong, so that the error itself is reported."""

    exporter: str = (
        "none"  # INGEST_TELEMETRY: auto (default: by the variables below), azure_monitor, otlp, console, none
    )
    connection_string: str = field(default="", repr=False)  # APPLICATIONINSIGHTS_CONNECTION_STRING
    otlp_endpoint: str = ""  # OTEL_EXPORTER_OTLP_ENDPOINT (http/protobuf, e.g. http://127.0.0.1:4318)
    sampling_ratio: float = 1.0  # INGEST_TRACE_SAMPLING: share of runs traced (whole runs: by trace id)
    metric_interval_s: float = 60.0  # INGEST_METRIC_INTERVAL_S: metric export interval, OTLP and console (the
    # Azure Monitor distro reads OTEL_METRIC_EXPORT_INTERVAL, in ms)
    log_format: str = "json"  # INGEST_LOG_FORMAT: json (one object a line) or text (for people)

    @property
    def otlp(self) -> bool:
        """OTLP export too (with Azure Monitor, when both are configured)."""
        return bool(self.otlp_endpoint) and self.exporter in ("azure_monitor", "otlp")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> TelemetrySettings:
        env = os.environ if environ is None else environ
        read = _Reader(env)
        connection_string = read("APPLICATIONINSIGHTS_CONNECTION_STRING", str, "")
        endpoint = read("OTEL_EXPORTER_OTLP_ENDPOINT", str, read("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", str, ""))
        exporter = read("INGEST_TELEMETRY", str, "auto", choices=TELEMETRY_EXPORTERS)
        if exporter == "auto":
            exporter = "azure_monitor" if connection_string else "otlp" if endpoint else "none"
        if exporter == "azure_monitor" and not connection_string:
            raise SettingsError("INGEST_TELEMETRY=azure_monitor needs APPLICATIONINSIGHTS_CONNECTION_STRING")
        if exporter == "otlp" and not endpoint:
            raise SettingsError("INGEST_TELEMETRY=otlp needs OTEL_EXPORTER_OTLP_ENDPOINT")
        ratio = read("INGEST_TRACE_SAMPLING", _natural_float, 1.0)
        if ratio > 1:
            raise SettingsError(f"INGEST_TRACE_SAMPLING={ratio}: expected a share between 0 and 1")
        return cls(
            exporter=exporter,
            connection_string=connection_string,
            otlp_endpoint=endpoint,
            sampling_ratio=ratio,
            metric_interval_s=read("INGEST_METRIC_INTERVAL_S", _positive_float, 60.0),
            log_format=read("INGEST_LOG_FORMAT", str, "json", choices=("json", "text")),
        )


class _Reader:
    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env

    def __call__(self, name: str, convert: Callable[[str], T], default: T, *, choices: tuple[str, ...] = ()) -> T:
        raw = self._env.get(name)
        if raw is None or raw == "":
            return default
        if choices and raw not in choices:
            raise SettingsError(f"{name}={raw!r}: expected one of {', '.join(choices)}")
        try:
            return convert(raw)
        except ValueError as error:
            raise SettingsError(f"{name}={raw!r}: {error}") from None


def _positive_int(raw: str) -> int:
    value = int(raw)
    if value <= 0:
        raise ValueError("must be a positive integer")
    return value


def _natural_int(raw: str) -> int:
    value = int(raw)
    if value < 0:
        raise ValueError("must not be negative")
    return value


def _positive_float(raw: str) -> float:
    value = float(raw)
    if value <= 0:
        raise ValueError("must be positive")
    return value


def _natural_float(raw: str) -> float:
    value = float(raw)
    if not value >= 0:
        raise ValueError("must not be negative")
    return value


def _boolean(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected true or false")


def _mebibytes(raw: str) -> int:
    return int(_positive_float(raw) * 1024 * 1024)
