"""Cutting a parsed document into chunks whose boundaries depend on content, not position.

Why content-defined: if boundaries were "every 512 tokens", inserting one paragraph near the start
would shift every later boundary, change every later chunk's text and force a re-embedding of the
whole file. Here a chunk ends where the *content* says so:

1. The document becomes a list of units: headings, paragraphs, and, for paragraphs longer than a
   chunk, their sentences (and, for sentences longer than a chunk, word runs).
2. Units are packed in order. A chunk is cut before a heading (a new section), or after a unit whose
   text hash falls under a threshold once the chunk holds at least half the target, or when the next
   unit would overflow the target. The hash depends only on the unit's own text, so after an edit
   the cuts re-synchronise at the first hash-chosen cut past it: an edit re-cuts one or two chunks.
3. Each chunk may start with the last sentences of the previous one (``overlap_tokens``), so a
   sentence cut off from its context is still found; never across a section boundary.

Chunks record the page span of their units and the heading path where they start.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass

from ingestion.model import Chunk, ParsedDocument
from ingestion.tokens import Tokenizer

# Sentence ends: Latin punctuation followed by space, or CJK full stops (which take no space).
_SENTENCE_END = re.compile(r"(?<=[.!?…])[\"'”’)\]]*\s+|(?<=[。！？])")
_HASH_SCALE = float(1 << 64)


@dataclass(frozen=True)
class _Unit:
    text: str
    tokens: int
    page: int | None
    headings: tuple[str, ...]
    is_heading: bool


class Chunker:
    """Splits ``ParsedDocument``s into ``Chunk``s of at most ``target_tokens`` tokens."""

    VERSION = "cdc-1"  # part of every chunks checkpoint key: change it when the cutting rules change

    def __init__(self, tokenizer: Tokenizer, target_tokens: int = 512, overlap_tokens: int = 64) -> None:
        if not 0 <= overlap_tokens * 2 <= target_tokens:
            raise ValueError("overlap must be at most half the target")
        self._tokenizer = tokenizer
        self.target = target_tokens
        self.overlap = overlap_tokens
        # Body budget: a chunk's own units, leaving room for the overlap it may carry.
        self._body_max = target_tokens - overlap_tokens
        self._min_cut = self._body_max // 2
        # Per-token chance of a hash-chosen cut past the minimum: on average chunks end around
        # three quarters of the budget, and about one in seven is cut by the budget itself.
        self._cut_rate = 1.0 / max(1, (self._body_max - self._min_cut) // 2)

    def chunk(self, doc: ParsedDocument, doc_id: str, version: str) -> list[Chunk]:
        chunks: list[Chunk] = []
        previous_body: list[_Unit] = []
        for body in self._pack(list(self._units(doc))):
            prefix = "" if body[0].is_heading else self._overlap_text(previous_body)
            text = "\n\n".join(unit.text for unit in body)
            if prefix:
                text = f"{prefix}\n\n{text}"
            pages = [unit.page for unit in body if unit.page is not None]
            first_body = next((unit for unit in body if not unit.is_heading), body[0])
            chunks.append(
                Chunk(
                    doc_id=doc_id,
                    ordinal=len(chunks),
                    text=text,
                    version=version,
                    page_start=min(pages) if pages else None,
                    page_end=max(pages) if pages else None,
                    headings=first_body.headings,
                    token_count=self._tokenizer.count(text),
                )
            )
            previous_body = body
        return chunks

    # ------------------------------------------------------------------ units

    def _units(self, doc: ParsedDocument) -> Iterator[_Unit]:
        path: list[str] = []
        for page in doc.pages:
            for block in page.blocks:
                text = block.text.strip()
                if not text:
                    continue
                if block.heading_level:
                    level = min(block.heading_level, 6)
                    path = [*path[: level - 1], " ".join(text.split())]
                    for piece in self._fit(text):
                        yield _Unit(piece, self._tokenizer.count(piece), page.number, tuple(path), True)
                    continue
                for piece in self._fit(text):
                    yield _Unit(piece, self._tokenizer.count(piece), page.number, tuple(path), False)

    def _fit(self, text: str) -> Iterator[str]:
        """``text`` as-is when it fits a chunk body; else its sentences, or word runs, that do."""
        if self._tokenizer.count(text) <= self._body_max:
            yield text
            return
        sentences = [s for s in _SENTENCE_END.split(text) if s.strip()]
        if len(sentences) > 1:
            for sentence in sentences:
                yield from self._fit(sentence)
            return
        yield from self._split_words(text)

    def _split_words(self, text: str) -> Iterator[str]:
        """Greedy runs of whitespace-separated words that fit a chunk body."""
        words = text.split()
        if len(words) <= 1:
            yield from self._split_chars(text)
            return
        run: list[str] = []
        run_tokens = 0
        for word in words:
            word_tokens = self._tokenizer.count(" " + word)
            if run and run_tokens + word_tokens > self._body_max:
                yield " ".join(run)
                run, run_tokens = [], 0
            if word_tokens > self._body_max:
                yield from self._split_chars(word)
                continue
            run.append(word)
            run_tokens += word_tokens
        if run:
            yield " ".join(run)

    def _split_chars(self, text: str) -> Iterator[str]:
        """Unspaced text (CJK, base64, a long URL): equal character slices that each fit."""
        tokens = self._tokenizer.count(text)
        if tokens <= self._body_max:
            yield text
            return
        pieces = -(-tokens // self._body_max) + 1
        step = -(-len(text) // pieces)
        for start in range(0, len(text), step):
            yield from self._split_chars(text[start : start + step])

    # ------------------------------------------------------------------ packing

    def _pack(self, units: list[_Unit]) -> Iterator[list[_Unit]]:
        current: list[_Unit] = []
        size = 0
        for index, unit in enumerate(units):
            # A new section starts a new chunk, unless the chunk so far is only a heading or two.
            if unit.is_heading and current and not all(u.is_heading for u in current):
                yield current
                current, size = [], 0
            # "+ 2" counts the blank line that joins units.
            if current and size + unit.tokens + 2 > self._body_max:
                yield current
                current, size = [], 0
            current.append(unit)
            size += unit.tokens + (2 if len(current) > 1 else 0)
            following = units[index + 1] if index + 1 < len(units) else None
            if not unit.is_heading and size >= self._min_cut and self._hash_cut(unit) and following is not None:
                yield current
                current, size = [], 0
        if current:
            yield current

    def _hash_cut(self, unit: _Unit) -> bool:
        digest = hashlib.blake2b(" ".join(unit.text.split()).encode(), digest_size=8).digest()
        chance = min(1.0, unit.tokens * self._cut_rate)
        return int.from_bytes(digest, "big") / _HASH_SCALE < chance

    def _overlap_text(self, previous: list[_Unit]) -> str:
        """The last whole sentences of the previous chunk, up to ``overlap`` tokens."""
        if not self.overlap or not previous or previous[-1].is_heading:
            return ""
        sentences = [s.strip() for s in _SENTENCE_END.split(previous[-1].text) if s.strip()]
        taken: list[str] = []
        budget = self.overlap
        for sentence in reversed(sentences):
            cost = self._tokenizer.count(sentence) + 1
            if cost > budget:
                break
            taken.insert(0, sentence)
            budget -= cost
        return " ".join(taken)
