"""Replay throughput against the floor of a bare ``orjson.loads`` loop over the same file.

The target: replay runs at one fifth or more of the bare loop's lines per second.

    python benchmarks/replay_throughput.py [--accounts 5000 --days 14]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import orjson

from detectors import build
from pipeline.engine import Engine
from pipeline.generate import generate, write_events
from pipeline.replay import replay_file
from pipeline.sinks import JsonlSink


def bare_loop(path: Path) -> tuple[int, float]:
    started = time.perf_counter()
    n = 0
    with path.open("rb") as lines:
        for line in lines:
            orjson.loads(line)
            n += 1
    return n, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--accounts", type=int, default=5000)
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--input", help="an existing events file instead of generating one")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(args.input) if args.input else Path(scratch) / "events.jsonl"
        if not args.input:
            events, _ = generate(accounts=args.accounts, days=args.days, seed=1)
            write_events(events, str(path))
            del events
        n, bare = bare_loop(path)
        with JsonlSink(str(Path(scratch) / "flags.jsonl")) as sink:
            summary = replay_file(str(path), Engine(build()), flag_sinks=[sink], progress=False)
    bare_rate, replay_rate = n / bare, summary.read / summary.seconds
    print(f"events: {n}")
    print(f"bare orjson.loads loop: {bare_rate:12,.0f} lines/s ({bare:.2f} s)")
    print(f"replay (3 detectors):   {replay_rate:12,.0f} events/s ({summary.seconds:.2f} s)")
    print(f"ratio: {replay_rate / bare_rate:.3f} (target >= 0.200)")


if __name__ == "__main__":
    main()
