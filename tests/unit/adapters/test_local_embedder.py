"""HashingEmbedder specifics: the same vectors in every process, speed on a novel, the no-word vector."""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ingestion.adapters.local_embedder import HashingEmbedder
from ingestion.tokens import Tokenizer

REPO = Path(__file__).resolve().parents[3]

SCRIPT = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    from ingestion.adapters.local_embedder import HashingEmbedder
    from ingestion.tokens import Tokenizer

    embedder = HashingEmbedder(64, Tokenizer("cl100k_base", Path(sys.argv[1])))
    print(json.dumps(embedder.embed(["Deterministic across processes, naïvely."]).vectors[0]))
    """
)


def test_vectors_are_identical_in_other_processes(tokenizer: Tokenizer, tmp_path: Path) -> None:
    """Two processes with different hash seeds produce the very same vector (no salted hash())."""
    expected = list(HashingEmbedder(64, tokenizer).embed(["Deterministic across processes, naïvely."]).vectors[0])
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONHASHSEED": seed}
        output = subprocess.run(
            [sys.executable, "-c", SCRIPT, str(tmp_path / "tiktoken")], env=env, capture_output=True, check=True
        ).stdout
        assert json.loads(output) == expected


def test_text_without_words_gets_one_fixed_unit_vector(tokenizer: Tokenizer) -> None:
    """Every word-less text maps to the same unit vector, and it differs from any worded text's."""
    embedder = HashingEmbedder(32, tokenizer)
    empty, punctuation, worded = embedder.embed(["", " ... !!! ", "word"]).vectors
    assert empty == punctuation
    assert math.isclose(math.hypot(*empty), 1.0)
    assert empty != worded
    assert sum(1 for x in empty if x != 0) == 1


def test_word_order_matters_through_bigrams(tokenizer: Tokenizer) -> None:
    """Same words in another order give a different (but close) vector: bigrams carry order."""
    embedder = HashingEmbedder(256, tokenizer)
    a, b = embedder.embed(["dog bites man", "man bites dog"]).vectors
    assert a != b
    assert sum(x * y for x, y in zip(a, b, strict=True)) > 0.3


def test_repeated_words_count_logarithmically(tokenizer: Tokenizer) -> None:
    """A word repeated 100 times does not drown the others (weight 1 + log tf)."""
    embedder = HashingEmbedder(256, tokenizer)
    base, spammed = embedder.embed(["alpha beta", "alpha " * 100 + "beta"]).vectors
    assert sum(x * y for x, y in zip(base, spammed, strict=True)) > 0.5


def test_invalid_dimensions_are_refused(tokenizer: Tokenizer) -> None:
    """Zero or negative dimensions are a configuration error."""
    with pytest.raises(ValueError, match="dimensions"):
        HashingEmbedder(0, tokenizer)


@pytest.mark.timeout(120)  # a hang detector, not a speed claim: the embedder takes about a second here
def test_a_novels_worth_of_chunks_embeds_in_service_sized_batches(tokenizer: Tokenizer) -> None:
    """About 1,600 chunks of ~500 tokens (a 3 MB novel) embed in batches of 256, one unit vector each."""
    rng = random.Random(7)
    vocabulary = ["".join(rng.choices("etaoinshrdlucmfwypvbgkjqxz", k=rng.randint(2, 9))) for _ in range(20_000)]
    weights = [1 / (rank + 1) for rank in range(len(vocabulary))]  # Zipf, like real prose
    text = " ".join(rng.choices(vocabulary, weights, k=560_000))[:3_200_000]
    chunks = [text[start : start + 2000] for start in range(0, len(text), 2000)]
    embedder = HashingEmbedder(384, tokenizer)
    vectors = []
    for start in range(0, len(chunks), 256):
        vectors.extend(embedder.embed(chunks[start : start + 256]).vectors)
    assert len(vectors) == 1600
    assert all(abs(sum(x * x for x in vector) - 1) < 1e-6 for vector in vectors)
