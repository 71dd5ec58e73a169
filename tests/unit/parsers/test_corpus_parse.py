"""Every corpus file, parsed in the sandbox: sensible text out, or the expected reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from ingestion.config import ParseLimits
from ingestion.errors import PermanentError
from ingestion.model import normalize_text
from ingestion.sandbox import parse_document_file
from tests.corpus_expectations import EXPECTED

pytestmark = pytest.mark.corpus


def test_the_expectations_cover_exactly_the_corpus(corpus: Path) -> None:
    """No corpus file lacks an expectation, and no expectation names a missing file."""
    assert sorted(path.name for path in corpus.iterdir()) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_corpus_file_parses_as_expected(corpus: Path, tmp_path: Path, name: str) -> None:
    """An indexed file's text holds its phrase; any other file ends with its reason code."""
    outcome, detail = EXPECTED[name]
    # As the parse stage does: a local file without extension, the blob name passed alongside.
    path = tmp_path / "source"
    path.symlink_to(corpus / name)
    limits = ParseLimits(isolation="process", timeout_s=60)
    if outcome == "indexed":
        document = parse_document_file(path, name, limits)
        text = normalize_text(document.text).casefold()
        assert normalize_text(detail).casefold() in text, f"{name}: {detail!r} not in its text"
        return
    with pytest.raises(PermanentError) as caught:
        parse_document_file(path, name, limits)
    assert caught.value.reason.value == detail, f"{name}: {caught.value.reason.value}: {caught.value.message}"
