"""SqliteSearchIndex specifics: persistence, schema checks, FTS query safety, paging, locks."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from ingestion.adapters.sqlite_index import SqliteSearchIndex, fts_query, reciprocal_rank_fusion
from ingestion.errors import TransientError
from ingestion.ports import SearchMode, SearchQuery
from tests.integration.builders import DIMENSIONS, axis, make_record


@pytest.fixture
def index(tmp_path: Path) -> Iterator[SqliteSearchIndex]:
    store = SqliteSearchIndex(tmp_path / "index.sqlite", DIMENSIONS)
    yield store
    store.close()


def keyword(index: SqliteSearchIndex, text: str) -> list[str]:
    return [hit.id for hit in index.search(SearchQuery(text=text, mode=SearchMode.KEYWORD, top=10))]


def test_chunks_and_their_text_index_survive_reopening(tmp_path: Path) -> None:
    """A reopened index still finds chunks by keyword and by vector."""
    first = SqliteSearchIndex(tmp_path / "index.sqlite", DIMENSIONS)
    record = make_record("doc1", 0, "persistent words", axis(3))
    first.upsert([record])
    first.close()
    second = SqliteSearchIndex(tmp_path / "index.sqlite", DIMENSIONS)
    assert keyword(second, "persistent") == [record.id]
    assert second.search(SearchQuery(vector=axis(3), mode=SearchMode.VECTOR))[0].id == record.id
    second.close()


def test_opening_with_other_dimensions_is_refused(tmp_path: Path) -> None:
    """An index file built for one vector size cannot be opened with another (a configuration error)."""
    SqliteSearchIndex(tmp_path / "index.sqlite", DIMENSIONS).close()
    with pytest.raises(ValueError, match="dimensional"):
        SqliteSearchIndex(tmp_path / "index.sqlite", DIMENSIONS * 2)


def test_keyword_search_folds_diacritics(index: SqliteSearchIndex) -> None:
    """ "cafe" finds "Café" (unicode61 with remove_diacritics), as users type without accents."""
    record = make_record("doc1", 0, "Le Café de Flore à Paris")
    index.upsert([record])
    assert keyword(index, "cafe") == [record.id]
    assert keyword(index, "CAFÉ") == [record.id]


def test_keyword_search_covers_title_and_headings(index: SqliteSearchIndex) -> None:
    """Words of the title and headings match as well as the chunk's text."""
    record = make_record("doc1", 0, "body", title="Annual Report", headings=("Appendix Zeta",))
    index.upsert([record])
    assert keyword(index, "annual") == [record.id]
    assert keyword(index, "zeta") == [record.id]


@pytest.mark.parametrize(
    "text",
    [
        '"unbalanced',
        "NEAR(a b)",
        "a* OR",
        "col:value",
        "AND",
        "-x",
        "^start",
        "a + b",
        "x" * 5000,
        "'; DROP TABLE chunks; --",
    ],
)
def test_hostile_query_text_never_breaks_fts(index: SqliteSearchIndex, text: str) -> None:
    """FTS5 syntax in user text is neutralized (words are quoted), so no query raises."""
    index.upsert([make_record("doc1", 0, "and near col value start drop table chunks")])
    keyword(index, text)
    assert index.count_for_doc("doc1") == 1


def test_fts_query_quotes_each_distinct_word() -> None:
    """The FTS query is the distinct lowercased words, quoted and OR-ed; none gives None."""
    assert fts_query('Hello, "World" hello AND') == '"hello" OR "world" OR "and"'
    assert fts_query("¿?¡! ___") is None


def test_rrf_sums_reciprocal_ranks() -> None:
    """Reciprocal Rank Fusion adds 1/(60 + rank) over the lists and sorts by the sum."""
    fused = reciprocal_rank_fusion([["a", "b", "c"], ["b", "d"]], top=3)
    assert [key for key, _ in fused] == ["b", "a", "d"]
    assert fused[0][1] == pytest.approx(1 / 62 + 1 / 61)


def test_ids_for_doc_pages_through_large_documents(index: SqliteSearchIndex) -> None:
    """More chunks than one page (1,000) are all listed, in id order, once."""
    records = [make_record("big", n, f"chunk {n}") for n in range(2345)]
    index.upsert(records[:1000])
    index.upsert(records[1000:])
    listed = list(index.ids_for_doc("big"))
    assert listed == sorted((r.id, "v1") for r in records)
    assert index.count_for_doc("big") == 2345


def test_a_locked_database_is_a_transient_error(tmp_path: Path) -> None:
    """An upsert that cannot get the write lock raises TransientError and writes nothing."""
    index = SqliteSearchIndex(tmp_path / "index.sqlite", DIMENSIONS, busy_timeout_s=0.05)
    blocker = sqlite3.connect(tmp_path / "index.sqlite", isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(TransientError, match="locked"):
            index.upsert([make_record("doc1", 0, "text")])
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert index.count_for_doc("doc1") == 0
    index.close()


def test_a_batch_is_written_in_one_transaction(index: SqliteSearchIndex) -> None:
    """Valid records of a batch are all visible after upsert returns (no partial commit)."""
    index.upsert([make_record("doc1", n, f"text {n}") for n in range(50)])
    assert index.count_for_doc("doc1") == 50
