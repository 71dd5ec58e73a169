"""The error envelope and Settings.from_env."""

from __future__ import annotations

from pathlib import Path

import pytest

from ingestion.config import Settings, SettingsError
from ingestion.errors import PermanentError, ReasonCode, Superseded, TransientError, from_payload


def test_error_envelopes_round_trip() -> None:
    """Errors cross process boundaries as small JSON envelopes and come back as the same kind."""
    transient = from_payload(TransientError("slow down", retry_after=2.5, code="throttled").to_payload())
    assert isinstance(transient, TransientError)
    assert (transient.retry_after, transient.code, transient.message) == (2.5, "throttled", "slow down")
    permanent = from_payload(PermanentError(ReasonCode.ENCRYPTED, "password").to_payload())
    assert isinstance(permanent, PermanentError)
    assert permanent.reason is ReasonCode.ENCRYPTED
    assert isinstance(from_payload(Superseded("moved on").to_payload()), Superseded)
    with pytest.raises(ValueError, match="not an error envelope"):
        from_payload({"ok": True})


def test_settings_defaults_run_embedded() -> None:
    """With no variables set, settings select the embedded profile and sane limits."""
    settings = Settings.from_env({})
    assert settings.profile == "embedded"
    assert settings.chunking.target_tokens == 512
    assert settings.index.batch_docs == 1000


def test_settings_read_variables() -> None:
    """Variables override defaults, with units converted."""
    settings = Settings.from_env(
        {
            "INGEST_DATA_DIR": "/tmp/x",
            "INGEST_MAX_FILE_MB": "1.5",
            "INGEST_CHUNK_TOKENS": "256",
            "INGEST_PARSE_ISOLATION": "inline",
        }
    )
    assert settings.data_dir == Path("/tmp/x")
    assert settings.limits.max_file_bytes == 1572864
    assert settings.chunking.target_tokens == 256
    assert settings.limits.isolation == "inline"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"INGEST_CHUNK_TOKENS": "zero"}, "INGEST_CHUNK_TOKENS"),
        ({"INGEST_CHUNK_TOKENS": "-3"}, "INGEST_CHUNK_TOKENS"),
        ({"INGEST_PROFILE": "cloud"}, "INGEST_PROFILE"),
        ({"INGEST_CHUNK_OVERLAP_TOKENS": "400"}, "INGEST_CHUNK_OVERLAP_TOKENS"),
        ({"INGEST_INDEX_BATCH_DOCS": "5000"}, "INGEST_INDEX_BATCH_DOCS"),
        ({"INGEST_EMBEDDER": "word2vec"}, "INGEST_EMBEDDER"),
        ({"INGEST_EMBEDDER": "azure_openai"}, "INGEST_OPENAI_ENDPOINT"),
        ({"INGEST_COSMOS_ENDPOINT_DISCOVERY": "maybe"}, "INGEST_COSMOS_ENDPOINT_DISCOVERY"),
        ({"INGEST_PROFILE": "azure"}, "UploadsStorage.*INGEST_COSMOS_ENDPOINT.*INGEST_SEARCH_ENDPOINT.*EMBEDDER"),
    ],
)
def test_settings_fail_fast_naming_the_variable(env: dict[str, str], message: str) -> None:
    """A bad value is refused at start-up with the variable's name in the message."""
    with pytest.raises(SettingsError, match=message):
        Settings.from_env(env)


AZURE = {
    "INGEST_PROFILE": "azure",
    "UploadsStorage__blobServiceUri": "https://acct.blob.core.windows.net",
    "INGEST_COSMOS_ENDPOINT": "https://acct.documents.azure.com:443/",
    "INGEST_SEARCH_ENDPOINT": "https://srch.search.windows.net",
    "INGEST_EMBEDDER": "azure_openai",
    "INGEST_OPENAI_ENDPOINT": "https://aoai.openai.azure.com",
}


def test_the_azure_profile_reads_endpoints_and_defaults_to_managed_identity() -> None:
    """With endpoints only, no key is set: every client will use DefaultAzureCredential."""
    settings = Settings.from_env(AZURE)
    assert settings.profile == "azure"
    assert settings.azure.storage_account_url == "https://acct.blob.core.windows.net"
    assert not (settings.azure.storage_connection_string or settings.azure.cosmos_key or settings.azure.search_key)
    assert not settings.embedding.api_key
    assert settings.azure.cosmos_endpoint_discovery is True
    assert (settings.azure.sdk_retries, settings.azure.sdk_timeout_s) == (2, 30.0)


def test_keys_and_connection_strings_never_appear_in_the_settings_repr() -> None:
    """Secrets are kept out of repr(), so logging the settings cannot leak them."""
    secrets = {
        "UploadsStorage": "DefaultEndpointsProtocol=http;AccountKey=SECRET-STORAGE",
        "INGEST_COSMOS_KEY": "SECRET-COSMOS",
        "INGEST_SEARCH_KEY": "SECRET-SEARCH",
        "INGEST_OPENAI_API_KEY": "SECRET-OPENAI",
    }
    settings = Settings.from_env(AZURE | secrets)
    assert settings.azure.cosmos_key == "SECRET-COSMOS"
    assert "SECRET" not in repr(settings)
