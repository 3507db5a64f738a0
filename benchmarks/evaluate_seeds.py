"""Detection quality at several seeds: generate, replay, evaluate; print the figures.

    python benchmarks/evaluate_seeds.py --accounts 5000 --days 14 --seeds 1 2 3
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import orjson

from detectors import build
from pipeline.engine import Engine
from pipeline.evaluate import evaluate
from pipeline.generate import generate, write_events
from pipeline.replay import replay_file
from pipeline.sinks import JsonlSink


def run_seed(accounts: int, days: int, seed: int, workdir: Path):
    started = time.perf_counter()
    events, labels = generate(accounts=accounts, days=days, seed=seed)
    path = workdir / f"events-{seed}.jsonl"
    write_events(events, str(path))
    generated = time.perf_counter() - started
    flags_path = workdir / f"flags-{seed}.jsonl"
    engine = Engine(build())
    with JsonlSink(str(flags_path)) as sink:
        summary = replay_file(str(path), engine, flag_sinks=[sink], progress=False)
    flags = [orjson.loads(line) for line in flags_path.read_bytes().splitlines() if line]
    return evaluate(labels, flags), summary, generated, len(events)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--accounts", type=int, default=5000)
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--keep", help="keep events and flags in this directory")
    args = parser.parse_args()
    worst_p, worst_r, worst_benign = 1.0, 1.0, 0.0
    with tempfile.TemporaryDirectory() as scratch:
        workdir = Path(args.keep or scratch)
        workdir.mkdir(parents=True, exist_ok=True)
        for seed in args.seeds:
            result, summary, generated, n = run_seed(args.accounts, args.days, seed, workdir)
            print(f"\n### seed {seed}: {n} events generated in {generated:.1f} s; "
                  f"replay {summary.seconds:.1f} s ({summary.events_per_second:,.0f} events/s)")
            print(result.render())
            for metrics in result.detectors.values():
                worst_p = min(worst_p, metrics["precision"])
                worst_r = min(worst_r, metrics["recall"])
            worst_benign = max([worst_benign, *(m["rate"] for m in result.benign.values())])
    print(f"\nworst over seeds: precision {worst_p:.3f}, recall {worst_r:.3f}, "
          f"benign look-alike flagged rate {worst_benign:.1%}")
    ok = worst_p >= 0.95 and worst_r >= 0.95 and worst_benign <= 0.01
    print("targets (P, R >= 0.95; benign <= 1%):", "met" if ok else "NOT met")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
