"""Fixtures shared by every test layer."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ingestion.tokens import Tokenizer

REPO = Path(__file__).resolve().parents[1]

# Session fixtures that start the servers the Azure adapters are tested against (tests/emulators).
pytest_plugins = [
    "tests.emulators.azurite",
    "tests.emulators.cosmos",
    "tests.emulators.search",
    "tests.emulators.embeddings",
]


def corpus_dir() -> Path:
    """The real-world corpus: ``INGEST_CORPUS_DIR``, else ``../shared/corpus/public`` beside the repo."""
    configured = os.environ.get("INGEST_CORPUS_DIR")
    return Path(configured) if configured else REPO.parent / "shared" / "corpus" / "public"


@pytest.fixture(scope="session")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Tokenizer:
    return Tokenizer("cl100k_base", tmp_path_factory.mktemp("tiktoken"))


@pytest.fixture(scope="session")
def corpus() -> Path:
    """The corpus folder; skipped locally when it is missing, but a failure under ``CI=true``."""
    folder = corpus_dir()
    if not folder.is_dir():
        if os.environ.get("CI") == "true":
            pytest.fail(f"corpus folder {folder} is missing under CI")
        pytest.skip(f"corpus folder {folder} is missing")
    return folder
