"""Functions the benchmarks run inside sandbox children (they must be importable by module name)."""

from __future__ import annotations

import logging
import resource
import time
from pathlib import Path

from pypdf import PdfReader

from ingestion.config import ParseLimits
from ingestion.model import ParsedDocument
from ingestion.parsers import extract


def extract_measured(path: Path, name: str, limits: ParseLimits) -> tuple[ParsedDocument, float, int]:
    """Our extraction, with its time inside the child and the child's peak RSS (KiB)."""
    started = time.perf_counter()
    document = extract(path, name, limits)
    return document, time.perf_counter() - started, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def pypdf_only(path: Path) -> tuple[int, int, float]:
    """The baseline: pypdf alone, every page's text. Returns (pages, characters, seconds)."""
    # pypdf logs a warning per odd font; the baseline's text is what is measured, not its warnings.
    logging.getLogger("pypdf").setLevel(logging.ERROR)
    started = time.perf_counter()
    reader = PdfReader(path)
    characters = sum(len(page.extract_text() or "") for page in reader.pages)
    return len(reader.pages), characters, time.perf_counter() - started
