"""The Azure adapters, built once from ``Settings`` (``INGEST_PROFILE=azure``; the emulators too).

The only place that builds SDK clients for the app: each with the SDK's own retries capped and
counted (``azure_errors.sdk_retry_kwargs``), and with keys only when a key is configured; otherwise
one ``DefaultAzureCredential`` (managed identity in Azure) shared by every client. At start the
job container and the search index are checked to exist: the app never creates them (the data-plane
roles cannot; infrastructure and ``python -m ingestion index ensure`` do).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ingestion.adapters.azure_artifacts import AzureArtifactStore
from ingestion.adapters.azure_blob import AzureBlobSource, connect_container
from ingestion.adapters.azure_dead_letters import AzureDeadLetters
from ingestion.adapters.azure_search import AzureSearchIndex, check_index, connect_search, ensure_index
from ingestion.adapters.cosmos_jobs import open_job_store
from ingestion.adapters.openai_embedder import connect_embedder
from ingestion.config import EmbeddingSettings, Settings
from ingestion.ports import Embedder
from ingestion.services import Adapters
from ingestion.tokens import Tokenizer

# What the OpenAI embedding models (text-embedding-3-*, ada-002) count tokens in: the embedder's
# limits (8,191 per input, 300k per request, the TPM quota) are in these tokens.
_EMBEDDING_ENCODING = "cl100k_base"


class _Credential:
    """One ``DefaultAzureCredential`` for every client, built only if some service has no key."""

    def __init__(self) -> None:
        self._credential: Any = None

    def __call__(self) -> Any:
        if self._credential is None:
            from azure.identity import DefaultAzureCredential  # noqa: PLC0415 -- slow import, only without keys

            self._credential = DefaultAzureCredential()
        return self._credential

    def unless(self, secret: str) -> Any:
        """``None`` when a key or connection string is configured (it wins), else the credential."""
        return None if secret else self()

    def close(self) -> None:
        if self._credential is not None:
            self._credential.close()


def azure_adapters(settings: Settings) -> Adapters:
    """Blob source, artifact store, job store and search index on the configured Azure services."""
    azure = settings.azure
    credential = _Credential()
    retries, timeout_s = azure.sdk_retries, azure.sdk_timeout_s

    def container(name: str, service: str) -> Any:
        return connect_container(
            container=name,
            connection_string=azure.storage_connection_string or None,
            account_url=azure.storage_account_url or None,
            credential=credential.unless(azure.storage_connection_string),
            retries=retries,
            timeout_s=timeout_s,
            service=service,
        )

    uploads, artifacts = container(settings.container, "blob"), container(azure.artifacts_container, "artifacts")
    letters = container(azure.dead_letter_container, "dead-letters") if azure.dead_letter_container else None
    jobs = open_job_store(
        endpoint=azure.cosmos_endpoint,
        database=azure.cosmos_database,
        container=azure.cosmos_container,
        key=azure.cosmos_key or None,
        credential=credential.unless(azure.cosmos_key),
        retries=retries,
        timeout_s=timeout_s,
        endpoint_discovery=azure.cosmos_endpoint_discovery,
    )
    search_client, index_client = _search_clients(settings, credential)
    index_client.close()  # the app only reads and writes documents; the schema is a deploy step
    closers = (uploads.close, artifacts.close, jobs.close, search_client.close, credential.close) + (
        (letters.close,) if letters is not None else ()
    )
    try:
        jobs.check()
        check_index(search_client)
    except BaseException:
        for close in closers:  # shared_services builds again on the next call: leave nothing open
            close()
        raise
    return Adapters(
        blobs=AzureBlobSource(uploads),
        artifacts=AzureArtifactStore(artifacts),
        jobs=jobs,
        index=AzureSearchIndex(
            search_client,
            dimensions=settings.embedding.dimensions,
            semantic_configuration=azure.semantic_configuration or None,
        ),
        closers=closers,
        dead_letters=AzureDeadLetters(letters) if letters is not None else None,
    )


def openai_embedder(settings: Settings, tokenizer: Tokenizer) -> tuple[Embedder, tuple[Callable[[], None], ...]]:
    """The Azure OpenAI (or OpenAI-compatible) embedder, paced to the deployment's quota, and its closers."""
    embedding: EmbeddingSettings = settings.embedding
    credential = _Credential()
    if tokenizer.name != _EMBEDDING_ENCODING:  # chunks may be sized in another encoding
        tokenizer = Tokenizer(_EMBEDDING_ENCODING, settings.tiktoken_cache_dir)
    embedder = connect_embedder(
        kind=embedding.kind,
        endpoint=embedding.endpoint,
        model=embedding.deployment,
        dimensions=embedding.dimensions,
        tokenizer=tokenizer,
        api_key=embedding.api_key or None,
        credential=credential.unless(embedding.api_key),
        api_version=embedding.api_version,
        tokens_per_minute=embedding.tokens_per_minute,
        requests_per_minute=embedding.requests_per_minute,
        retries=settings.azure.sdk_retries,
        timeout_s=settings.azure.sdk_timeout_s,
    )
    return embedder, (embedder.close, credential.close)


def ensure_search_index(settings: Settings) -> str:
    """Create or update the index schema (the deploy step); "created", "updated" or "unchanged"."""
    azure = settings.azure
    credential = _Credential()
    search_client, index_client = _search_clients(settings, credential)
    try:
        return ensure_index(
            index_client, azure.search_index, settings.embedding.dimensions, azure.semantic_configuration or None
        )
    finally:
        search_client.close()
        index_client.close()
        credential.close()


def _search_clients(settings: Settings, credential: _Credential) -> tuple[Any, Any]:
    azure = settings.azure
    return connect_search(
        endpoint=azure.search_endpoint,
        index=azure.search_index,
        key=azure.search_key or None,
        credential=credential.unless(azure.search_key),
        retries=azure.sdk_retries,
        timeout_s=azure.sdk_timeout_s,
    )
