"""The chunker: size bounds, headings, pages, overlap, and edits that stay local."""

from __future__ import annotations

import itertools
import random

import pytest

from ingestion.chunking import Chunker
from ingestion.model import Block, Page, ParsedDocument
from ingestion.tokens import Tokenizer

WORDS = [
    "alpha",
    "beta",
    "gamma",
    "delta",
    "epsilon",
    "zeta",
    "eta",
    "theta",
    "iota",
    "kappa",
    "lambda",
    "river",
    "mountain",
    "cloud",
    "paper",
]


def paragraphs(count: int, seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        sentences = [
            " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 18))).capitalize() + "."
            for _ in range(rng.randint(1, 6))
        ]
        out.append(" ".join(sentences))
    return out


def doc_of(paras: list[str]) -> ParsedDocument:
    return ParsedDocument("text/plain", (Page(None, tuple(Block(p) for p in paras)),))


def test_chunks_respect_the_token_budget(tokenizer: Tokenizer) -> None:
    """No chunk exceeds the target, overlap included; ordinals are dense from 0."""
    chunks = Chunker(tokenizer, target_tokens=200, overlap_tokens=30).chunk(doc_of(paragraphs(300)), "d", "v")
    assert [c.ordinal for c in chunks] == list(range(len(chunks)))
    assert max(c.token_count for c in chunks) <= 200
    assert all(c.text.strip() for c in chunks)


def test_long_paragraphs_and_unspaced_text_are_split(tokenizer: Tokenizer) -> None:
    """A paragraph, sentence or unspaced run longer than a chunk is split by sentences, words, characters."""
    long_sentence = " ".join(WORDS * 80)
    cjk = "漢字かな交じり文" * 400
    chunks = Chunker(tokenizer, target_tokens=128, overlap_tokens=0).chunk(doc_of([long_sentence, cjk]), "d", "v")
    assert max(c.token_count for c in chunks) <= 128
    joined = "".join(c.text for c in chunks)
    assert joined.count("漢字かな交じり文") >= 399  # characters survive, at most one run cut at a slice edge


def test_headings_start_chunks_and_are_recorded(tokenizer: Tokenizer) -> None:
    """A heading begins a new chunk, and chunks carry their heading path."""
    blocks = [
        Block("Guide", 1),
        Block("Intro text. " * 5),
        Block("Setup", 2),
        Block("Install it. " * 5),
        Block("Usage", 2),
    ]
    blocks.append(Block("Run it. " * 5))
    chunks = Chunker(tokenizer, target_tokens=512, overlap_tokens=0).chunk(
        ParsedDocument("text/markdown", (Page(None, tuple(blocks)),)), "d", "v"
    )
    assert [c.text.split("\n")[0] for c in chunks] == ["Guide", "Setup", "Usage"]
    assert [c.headings for c in chunks] == [("Guide",), ("Guide", "Setup"), ("Guide", "Usage")]


def test_page_spans_follow_the_units(tokenizer: Tokenizer) -> None:
    """Each chunk records the first and last page its text came from."""
    pages = tuple(Page(n, (Block(p),)) for n, p in enumerate(paragraphs(60), start=1))
    chunks = Chunker(tokenizer, target_tokens=200, overlap_tokens=0).chunk(
        ParsedDocument("application/pdf", pages), "d", "v"
    )
    assert chunks[0].page_start == 1
    assert chunks[-1].page_end == 60
    for before, after in itertools.pairwise(chunks):
        assert before.page_end is not None and after.page_start is not None
        assert before.page_start is not None and before.page_start <= before.page_end <= after.page_start


def test_overlap_repeats_the_previous_chunks_last_sentences(tokenizer: Tokenizer) -> None:
    """With overlap, a chunk starts with whole sentences from the end of the previous one."""
    chunks = Chunker(tokenizer, target_tokens=150, overlap_tokens=40).chunk(doc_of(paragraphs(80)), "d", "v")
    carried = [
        c for c in chunks[1:] if c.text.split("\n\n")[0] and c.text.split("\n\n")[0] in chunks[c.ordinal - 1].text
    ]
    assert len(carried) >= len(chunks) // 2


@pytest.mark.parametrize("position", ["start", "middle", "end"])
def test_an_inserted_paragraph_changes_few_chunks(tokenizer: Tokenizer, position: str) -> None:
    """Inserting a paragraph anywhere leaves almost every chunk's text, and so its vector, reusable."""
    paras = paragraphs(2000)
    index = {"start": 3, "middle": 1000, "end": 1995}[position]
    edited = [*paras[:index], "A completely new paragraph about something else entirely.", *paras[index:]]
    chunker = Chunker(tokenizer, target_tokens=512, overlap_tokens=64)
    before = chunker.chunk(doc_of(paras), "d", "v1")
    after = chunker.chunk(doc_of(edited), "d", "v2")
    new_texts = {c.content_hash for c in after} - {c.content_hash for c in before}
    assert len(before) > 100
    assert len(new_texts) <= 5


def test_insertions_recut_under_two_chunks_on_average(tokenizer: Tokenizer) -> None:
    """Over 24 seeded random insertions, fewer than two chunks per edit get new text."""
    rng = random.Random(11)
    chunker = Chunker(tokenizer, target_tokens=512, overlap_tokens=64)
    paras = paragraphs(1200, seed=5)
    before = {c.content_hash for c in chunker.chunk(doc_of(paras), "d", "v1")}
    changed = []
    for _ in range(24):
        index = rng.randrange(len(paras))
        edited = [*paras[:index], "An inserted paragraph, new to this version.", *paras[index:]]
        changed.append(len({c.content_hash for c in chunker.chunk(doc_of(edited), "d", "v2")} - before))
    assert sum(changed) / len(changed) < 2


def test_editing_a_paragraph_changes_few_chunks(tokenizer: Tokenizer) -> None:
    """Editing one paragraph in the middle re-cuts at most a few chunks."""
    paras = paragraphs(2000)
    edited = list(paras)
    edited[1000] = edited[1000].replace(" ", " really ", 3)
    chunker = Chunker(tokenizer, target_tokens=512, overlap_tokens=64)
    before = {c.content_hash for c in chunker.chunk(doc_of(paras), "d", "v1")}
    after = {c.content_hash for c in chunker.chunk(doc_of(edited), "d", "v2")}
    assert 1 <= len(after - before) <= 5


def test_empty_document_has_no_chunks(tokenizer: Tokenizer) -> None:
    """Whitespace-only blocks produce no chunks (the stage turns that into reason 'empty')."""
    assert Chunker(tokenizer).chunk(doc_of(["  ", "\n"]), "d", "v") == []
