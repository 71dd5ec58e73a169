"""The embedded ``Embedder``: deterministic feature hashing, with no model download and no network.

Features are the lowercased words (``\\w+``, Unicode-aware; English stop words dropped and plurals
folded) and word bigrams of a text. Each feature is hashed with BLAKE2b (Python's ``hash()`` is
salted per process, so it would give another vector in every worker) to a bucket and a sign; a
feature contributes ``1 + log(tf)``; the vector is L2-normalized. Texts sharing words land close
in cosine terms, which is all keyword-ish semantic search needs offline. Limits and errors mirror
Azure OpenAI's embeddings API, so the embed stage's batching is exercised as in production.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Sequence
from itertools import pairwise

import numpy as np
import numpy.typing as npt

from ingestion.errors import PermanentError, ReasonCode
from ingestion.ports import Embeddings
from ingestion.tokens import Tokenizer

_WORD = re.compile(r"\w+")
# English function words carry no topic: without them a question ("can I ... how do I ...") matches
# passages by their topic words instead of by shared grammar. Other languages keep every word.
_STOP_WORDS = frozenset(
    "a an and are as at be by can could did do does for from had has have how i if in into is it its me "
    "my no not of on or our so than that the their them then there these they this to was we were what "
    "when where which who why will with would you your".split()
)
_PERSON = b"ingest-hash-v1"  # BLAKE2b personalization: a new scheme gets a new name (and model)
_CACHE_LIMIT = 1_000_000  # features remembered; a corpus's vocabulary repeats (Zipf), hashing is the cost
# What a text without any word (empty, punctuation only) embeds to. A zero vector would make cosine
# 0/0; a fixed unit vector keeps it defined, and all such texts are equal, which they are: no words.
_NO_FEATURES = "\x00no-features"


class HashingEmbedder:
    """Feature-hashing embeddings of ``dimensions`` floats; ``tokenizer`` counts tokens for limits."""

    def __init__(self, dimensions: int, tokenizer: Tokenizer) -> None:
        if dimensions <= 0:
            raise ValueError("dimensions must be positive")
        self._dimensions = dimensions
        self._tokenizer = tokenizer
        self._slots: dict[str, int] = {}  # feature -> (bucket + 1) * sign
        self._empty = _unit(self._accumulate(Counter([_NO_FEATURES])))

    @property
    def model(self) -> str:
        return "local-hashing-v1"

    @property
    def dimensions(self) -> int:
        return self._dimensions

    @property
    def max_batch_inputs(self) -> int:
        return 2048

    @property
    def max_batch_tokens(self) -> int:
        return 300_000

    @property
    def max_input_tokens(self) -> int:
        return 8191

    def embed(self, texts: Sequence[str]) -> Embeddings:
        if len(texts) > self.max_batch_inputs:
            raise PermanentError(
                ReasonCode.EMBED_REJECTED, f"{len(texts)} inputs in one request, the limit is {self.max_batch_inputs}"
            )
        counts = [self._tokenizer.count(text) for text in texts]
        for position, count in enumerate(counts):
            if count > self.max_input_tokens:
                raise PermanentError(
                    ReasonCode.EMBED_REJECTED,
                    f"input {position} has {count} tokens, the limit is {self.max_input_tokens}",
                )
        if sum(counts) > self.max_batch_tokens:
            raise PermanentError(
                ReasonCode.EMBED_REJECTED, f"{sum(counts)} tokens in one request, the limit is {self.max_batch_tokens}"
            )
        return Embeddings([self._vector(text) for text in texts], sum(counts))

    def _vector(self, text: str) -> tuple[float, ...]:
        words = [_fold_plural(word) for word in _WORD.findall(text.lower()) if word not in _STOP_WORDS]
        features = Counter(words)
        features.update(f"{first} {second}" for first, second in pairwise(words))
        if not features:
            return self._empty
        vector = _unit(self._accumulate(features))
        return vector or self._empty  # every feature cancelled out: as good as no features

    def _accumulate(self, features: Counter[str]) -> npt.NDArray[np.float64]:
        slots = np.fromiter((self._slot(f) for f in features), dtype=np.int64, count=len(features))
        weights = 1.0 + np.log(np.fromiter(features.values(), dtype=np.float64, count=len(features)))
        signed = np.where(slots < 0, -weights, weights)
        summed = np.bincount(np.abs(slots) - 1, weights=signed, minlength=self._dimensions)
        return summed.astype(np.float64, copy=False)  # already float64 with weights; numpy's stubs say intp

    def _slot(self, feature: str) -> int:
        slot = self._slots.get(feature)
        if slot is None:
            digest = hashlib.blake2b(feature.encode("utf-8", "surrogatepass"), digest_size=8, person=_PERSON)
            value = int.from_bytes(digest.digest(), "little")
            slot = ((value >> 1) % self._dimensions + 1) * (1 if value & 1 else -1)
            if len(self._slots) >= _CACHE_LIMIT:
                self._slots.clear()  # bounded memory; the cost is only re-hashing
            self._slots[feature] = slot
        return slot


def _fold_plural(word: str) -> str:
    """A crude English plural fold ("tents" -> "tent", "policies" -> "policy"), so forms meet."""
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def _unit(vector: npt.NDArray[np.float64]) -> tuple[float, ...]:
    """``vector`` scaled to length 1, or ``()`` when it is all zeros."""
    norm = float(np.linalg.norm(vector))
    return tuple((vector / norm).tolist()) if norm > 0 else ()
