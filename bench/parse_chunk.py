"""Parse + chunk throughput over the real-world corpus, with a pypdf-only baseline in the same run.

    .venv/bin/python bench/parse_chunk.py [--corpus DIR]

Prints pages/s and chunks/s over every corpus file (extraction in sandboxed child processes, as in
production, so process start-up is included), the PDF extraction rate of our path against pypdf
alone on the same PDFs (both in the same sandbox, same limits), and peak memory of the parse child
for the largest files. Figures are ratios within one run: this machine is noisy.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.measure import extract_measured, pypdf_only
from ingestion.chunking import Chunker
from ingestion.config import ParseLimits
from ingestion.errors import PermanentError
from ingestion.sandbox import run_isolated
from ingestion.sniff import sniff_head
from ingestion.tokens import Tokenizer

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Tally:
    files: int = 0
    failed: int = 0
    pages: int = 0
    chunks: int = 0
    parse_s: float = 0.0
    chunk_s: float = 0.0
    pdf_pages: int = 0
    pdf_ours_s: float = 0.0
    pdf_base_s: float = 0.0
    pdf_rows: list[str] = field(default_factory=list)
    peaks: list[tuple[int, str, int]] = field(default_factory=list)  # (peak KiB, name, file size)


def measure_file(path: Path, limits: ParseLimits, chunker: Chunker, tally: Tally) -> None:
    tally.files += 1
    started = time.perf_counter()
    try:
        document, _, peak_kib = run_isolated(
            extract_measured, path, path.name, limits, timeout_s=limits.timeout_s, memory_mb=limits.memory_mb
        )
    except PermanentError:
        tally.failed += 1
        tally.parse_s += time.perf_counter() - started
        return
    ours = time.perf_counter() - started
    tally.parse_s += ours
    started = time.perf_counter()
    tally.chunks += len(chunker.chunk(document, "bench", "v"))
    tally.chunk_s += time.perf_counter() - started
    tally.pages += len(document.pages)
    tally.peaks.append((peak_kib, path.name, path.stat().st_size))
    with path.open("rb") as handle:
        if sniff_head(handle.read(8192)) != "application/pdf":
            return
    started = time.perf_counter()
    try:
        pages, _, _ = run_isolated(pypdf_only, path, timeout_s=limits.timeout_s, memory_mb=limits.memory_mb)
    except PermanentError as error:
        tally.pdf_rows.append(f"  {path.name:<52} pypdf failed: {error.reason} ({error.message[:60]})")
        return
    base = time.perf_counter() - started
    tally.pdf_pages += pages
    tally.pdf_ours_s += ours
    tally.pdf_base_s += base
    tally.pdf_rows.append(
        f"  {path.name:<52} {pages:>4} pages  ours {ours:6.2f}s  pypdf {base:6.2f}s  x{base / ours:5.1f}"
    )


def report(tally: Tally) -> None:
    total = tally.parse_s + tally.chunk_s
    print(f"corpus: {tally.files} files, {tally.failed} of them ended with a reason code")
    print(f"  {tally.pages} pages (or slides, sheets), {tally.chunks} chunks")
    print(f"parse {tally.parse_s:.2f}s + chunk {tally.chunk_s:.2f}s = {total:.2f}s")
    print(f"  -> {tally.pages / total:.1f} pages/s, {tally.chunks / total:.1f} chunks/s")
    print(f"\nPDF text extraction, same files, same sandbox ({tally.pdf_pages} pages where both succeed):")
    print("\n".join(tally.pdf_rows))
    ours_rate, base_rate = tally.pdf_pages / tally.pdf_ours_s, tally.pdf_pages / tally.pdf_base_s
    print(f"  ours {ours_rate:.1f} pages/s vs pypdf-only {base_rate:.1f} pages/s: x{ours_rate / base_rate:.2f}")
    print("\npeak RSS of the parse child, largest files:")
    for peak_kib, name, size in sorted(tally.peaks, key=lambda row: -row[2])[:6]:
        print(f"  {name:<52} {size / 1e6:6.2f} MB file  {peak_kib / 1024:7.1f} MiB")
    worst = max(tally.peaks)
    print(f"  largest peak over all files: {worst[0] / 1024:.1f} MiB ({worst[1]})")
    print(f"parent peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.1f} MiB")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=REPO.parent / "shared" / "corpus" / "public")
    args = parser.parse_args()
    limits = ParseLimits()
    chunker = Chunker(Tokenizer("cl100k_base", Path("/tmp/ingestion-tiktoken")))
    # Start the fork server before timing anything: its one-off start-up is not a per-file cost.
    run_isolated(pypdf_only, REPO / "samples" / "return-policy.pdf", timeout_s=30, memory_mb=1024)
    tally = Tally()
    for path in sorted(p for p in args.corpus.iterdir() if p.is_file()):
        measure_file(path, limits, chunker, tally)
    report(tally)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
