"""What telemetry costs: parse + chunk over the real-world corpus with telemetry on and off, same run.

    .venv/bin/python bench/telemetry_overhead.py [--corpus DIR] [--rounds 5] [--isolation process|inline]

Each file goes through the real activities (``activities.run_stage``) on the embedded adapters, as
in production: registered, fetched (not timed), then ``parse_document`` and ``chunk_document``
(timed). "Off" is what a process without exporters runs (the default: no-op providers, ports still
wrapped). "On" is the full SDK: a span per activity and per port call, every metric, the project's
log records, all exported over OTLP/HTTP by background threads to a local collector that accepts
and discards them (so encoding and sending are paid, on this machine's 2 cores). Rounds alternate
off/on and on/off to cancel drift; the figure is the median of the rounds' on/off ratios. Parse isolation
``process`` (production: a sandboxed child per file) and ``inline`` (no child: the worst case for a
relative overhead, since the work measured is smallest) can both be measured.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    # Imported here, not at the top: see bench/telemetry_rounds.py.
    from bench.telemetry_rounds import Sink, collector, measure  # noqa: PLC0415
    from ingestion.telemetry.logs import CorrelationFilter, JsonFormatter  # noqa: PLC0415

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=REPO.parent / "shared" / "corpus" / "public")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per mode (default 5)")
    parser.add_argument("--isolation", choices=("process", "inline"), default="process")
    args = parser.parse_args()
    if not args.corpus.is_dir():
        args.corpus = REPO / "samples"
        print(f"no corpus beside the repository: measuring {args.corpus} instead")
    # The console log handler costs the same in both modes: what is measured is telemetry's share.
    console = logging.StreamHandler(open("/dev/null", "w"))  # noqa: SIM115 -- lives as long as the process
    console.setFormatter(JsonFormatter())
    console.addFilter(CorrelationFilter())
    logging.basicConfig(level=logging.INFO, handlers=[console], force=True)
    files = sorted(path for path in args.corpus.iterdir() if path.is_file())
    print(f"{len(files)} files from {args.corpus}, parse isolation {args.isolation}, {args.rounds} rounds per mode")
    with collector() as endpoint:
        times = measure(files, args.corpus, args.isolation, args.rounds, endpoint)
        received = Sink.received
    off, on = statistics.median(times["off"]), statistics.median(times["on"])
    # Each round runs both modes back to back: its ratio is paired, so slow drift cancels out.
    ratios = sorted(b / a for a, b in zip(times["off"], times["on"], strict=True))
    print(f"parse+chunk, median of {args.rounds}: telemetry off {off:.2f} s, on {on:.2f} s ({on / off:.3f}x)")
    print(
        f"overhead: on/off per round, median {statistics.median(ratios):.3f} "
        f"({(statistics.median(ratios) - 1) * 100:+.1f}%), range {ratios[0]:.3f}-{ratios[-1]:.3f}; "
        f"the collector received {received} exports"
    )
    cpu = sorted(b / a for a, b in zip(times["off cpu"], times["on cpu"], strict=True))
    print(
        f"cpu time of the round (fetch included), every thread of this process (the exporters and their final "
        f"flush too; not the parse children): "
        f"on/off per round, median {statistics.median(cpu):.3f} ({(statistics.median(cpu) - 1) * 100:+.1f}%), "
        f"range {cpu[0]:.3f}-{cpu[-1]:.3f}"
    )
    spread = max(times["off"]) / min(times["off"])
    print(f"noise: the slowest 'off' round took {spread:.3f}x the fastest")
    return 0


if __name__ == "__main__":
    sys.exit(main())
