"""Streaming worker figures on a real broker: backlog throughput and event->flag latency.

    python benchmarks/worker_throughput.py --bootstrap 127.0.0.1:9092 --accounts 5000 --days 7

1. *Backlog*: the traffic is produced first, then one worker (``--workers`` of them) starts;
   events/s = events / (time from the first processed event to caught up).
2. *Live*: a fresh worker runs while the traffic is produced at ``--rate`` events/s; the
   latency is from each triggering event's Kafka timestamp to its flag (the worker's
   ``abuse_event_to_flag_seconds`` histogram). The traffic is days played in minutes, so the
   reorder wait (``--lateness``, in event time) is short in wall time here; on real-time
   traffic a flag waits up to the lateness (300 s by default) plus the figures below.
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import orjson
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.generate import generate, write_events  # noqa: E402
from pipeline.kafka_settings import KafkaSettings  # noqa: E402
from pipeline.produce import produce_file  # noqa: E402


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def scrape(port: int) -> dict[str, list]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples: dict[str, list] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(sample)
    return samples


def value(samples: dict[str, list], name: str) -> float:
    return sum(s.value for s in samples.get(name, []))


def start_worker(bootstrap: str, prefix: str, workdir: Path, *extra: str):
    port = free_port()
    log = open(workdir / f"worker-{port}.log", "wb")  # noqa: SIM115
    process = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "worker", "--bootstrap", bootstrap,
         "--group-id", prefix.rstrip("."), "--topic-prefix", prefix,
         "--state-dir", str(workdir / f"state-{prefix}"), "--metrics-port", str(port), *extra],
        cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    return process, port


def wait(ports: list[int], events: int, timeout: float = 900.0) -> tuple[float, float, dict]:
    """Until caught up; returns (first processed, caught up) monotonic times and metrics."""
    first = None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for port in ports:
            try:
                samples = scrape(port)
            except OSError:
                continue
            if value(samples, "abuse_detect_active") != 1:
                continue
            if first is None and value(samples, "abuse_events_processed_total") > 0:
                first = time.monotonic()
            done = value(samples, "abuse_detect_received_events")
            if done >= events and value(samples, "abuse_caught_up") == 1:
                return first or time.monotonic(), time.monotonic(), samples
        time.sleep(0.05)
    raise SystemExit("worker did not catch up in time")


def quantile(samples: dict[str, list], q: float) -> float:
    buckets = sorted((float(s.labels["le"]), s.value)
                     for s in samples.get("abuse_event_to_flag_seconds_bucket", []))
    total = buckets[-1][1] if buckets else 0
    for bound, count in buckets:
        if total and count >= q * total:
            return bound
    return float("nan")


def stop(processes) -> None:
    for process in processes:
        process.send_signal(signal.SIGTERM)
    for process in processes:
        process.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--accounts", type=int, default=5000)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--rate", type=float, default=20000, help="live produce rate, events/s")
    parser.add_argument("--checkpoints", choices=("kafka", "file"), default="kafka")
    parser.add_argument("--split", action="store_true",
                        help="each worker as two processes: --stages ingest and --stages detect "
                             "(and a third, --stages shard, with --key-shards)")
    parser.add_argument("--key-shards", type=int, default=1,
                        help="split login_frequency and refund_abuse by key over N shards")
    parser.add_argument("--no-live", action="store_true", help="the backlog figure only")
    args = parser.parse_args()
    sharding = ("--key-shards", str(args.key_shards))

    workdir = Path(tempfile.mkdtemp(prefix="worker-bench-"))
    events, _ = generate(accounts=args.accounts, days=args.days, seed=args.seed)
    path = workdir / "events.jsonl"
    write_events(events, str(path))
    print(f"{len(events):,} events ({args.accounts} accounts x {args.days} days) in {workdir}")

    tag = uuid.uuid4().hex[:6]
    prefix = f"bench-{tag}."
    summary = produce_file(str(path), KafkaSettings(bootstrap=args.bootstrap,
                                                    topic_prefix=prefix), progress=False)
    print(f"produced: {summary.render()}")
    started = time.monotonic()
    roles = [("--stages", "ingest"), ("--stages", "detect")] if args.split else [()]
    if args.split and args.key_shards > 1:
        roles.append(("--stages", "shard"))
    workers = [start_worker(args.bootstrap, prefix, workdir, "--checkpoints", args.checkpoints,
                            *sharding, *role) for _ in range(args.workers) for role in roles]
    first, done, samples = wait([port for _, port in workers], len(events))
    stop([process for process, _ in workers])
    shape = " (ingest and detect in separate processes)" if args.split else ""
    if args.key_shards > 1:
        shape += f", {args.key_shards} key shards"
    print(f"backlog, {args.workers} worker(s){shape}, checkpoints in {args.checkpoints}: "
          f"{len(events) / (done - first):,.0f} events/s "
          f"({done - first:.1f} s from first event to caught up; {done - started:.1f} s "
          f"including start-up and group join); "
          f"{value(samples, 'abuse_flags_total'):.0f} flags")
    if args.no_live:
        return

    prefix = f"bench-{tag}-live."
    process, port = start_worker(args.bootstrap, prefix, workdir, "--checkpoints",
                                 args.checkpoints, *sharding)
    time.sleep(5)  # joined the group
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=args.bootstrap, linger_ms=5)
    began = time.monotonic()
    for i, line in enumerate(path.read_bytes().splitlines()):
        head = orjson.loads(line)
        producer.send(f"{prefix}events.{head['type']}", key=head["account_id"].encode(),
                      value=line)
        if i % 1000 == 999:  # pace: the i-th event goes out at i / rate seconds
            time.sleep(max(0.0, began + i / args.rate - time.monotonic()))
    producer.flush()
    producer.close()
    print(f"live: produced {len(events):,} events in {time.monotonic() - began:.1f} s")
    _, _, samples = wait([port], len(events))
    stop([process])
    count = value(samples, "abuse_event_to_flag_seconds_count")
    mean = value(samples, "abuse_event_to_flag_seconds_sum") / count if count else float("nan")
    print(f"live at {args.rate:,.0f} events/s: {count:.0f} flags, event->flag latency "
          f"mean {mean:.2f} s, p50 <= {quantile(samples, 0.5)} s, "
          f"p95 <= {quantile(samples, 0.95)} s (histogram bucket bounds)")
    print(json.dumps({"events": len(events), "workdir": str(workdir)}))


if __name__ == "__main__":
    main()
