"""Faust baseline on a real broker: what a per-event faust agent consumes per second here.

    python benchmarks/faust_baseline.py --bootstrap 127.0.0.1:19592 --events 200000

The streaming worker's target is stated as a multiple of "a per-event faust Table agent"; this
measures that agent, and its lighter relatives, against the same broker:

1. ``--events`` realistic events (``pipeline.generate``, seed 1, the first N, serialised with
   orjson) are produced to a fresh topic (``--partitions`` of them, 6 or 1), keyed by
   ``account_id``, before any timing.
2. Each mode then runs in its own subprocess with a fresh consumer group (for faust: a fresh
   app id, ``web_enabled=False``, ``value_serializer="raw"``, ``store="memory://"``,
   ``consumer_auto_offset_reset="earliest"``) and times from its first message to the N-th:

   * ``faust-table``: one faust Table write per event (``counts[account_id] += 1``), the
     classic per-event pattern (each write also goes to the table's changelog topic);
   * ``faust-bare``: ``async for value in stream`` with ``orjson.loads`` of each value;
   * ``faust-take``: ``async for values in stream.take(10_000, within=1.0)``, loads each;
   * ``aiokafka``: a plain ``AIOKafkaConsumer.getmany`` loop with ``orjson.loads``.

   A faust worker is run with ``faust.Worker(app).execute_from_commandline()``; the agent that
   has seen N events writes its figures and schedules ``worker.stop()`` (the same graceful path
   as SIGTERM), so the process exits by itself. A mode that fails, exits non-zero or does not
   finish within ``--timeout`` seconds is reported as failed with the tail of its output (the
   traceback), and the next mode runs.
3. A table: mode, events, seconds (first message to N-th), events/s, ratio to ``faust-table``;
   plus the consumer process's CPU use over those seconds (100 % = one core busy), start-up
   (process start to first message), events/s counting start-up too (a consumer that prefetches
   before handing out its first message looks faster on the first figure alone), and stop (N-th
   message to process exit).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import re
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import orjson

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

MODES = ("faust-table", "faust-bare", "faust-take", "aiokafka")
TAKE = 10_000
EVENTS_PER_ACCOUNT_WEEK = 60  # a little under what generate() gives, to size the run


# ---------------------------------------------------------------------------------------------
# parent: produce, run the modes, print the table


def make_events(n: int, days: int) -> list[bytes]:
    """The first ``n`` generated events (seed 1) as orjson bytes; more accounts until enough."""
    from pipeline.generate import generate

    accounts = max(200, math.ceil(n / (EVENTS_PER_ACCOUNT_WEEK * days / 7)))
    while True:
        events, _ = generate(accounts=accounts, days=days, seed=1)
        if len(events) >= n:
            return [orjson.dumps(event) for event in events[:n]]
        accounts = math.ceil(accounts * n / max(1, len(events)) * 1.1)


def produce(bootstrap: str, topic: str, partitions: int, values: list[bytes]) -> float:
    """Create ``topic`` and publish ``values`` keyed by account id; returns seconds taken."""
    from kafka import KafkaProducer
    from kafka.admin import KafkaAdminClient, NewTopic

    admin = KafkaAdminClient(bootstrap_servers=bootstrap.split(","))
    try:
        admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        admin.close()
    started = time.perf_counter()
    producer = KafkaProducer(bootstrap_servers=bootstrap.split(","), linger_ms=20,
                             batch_size=512 * 1024, acks="all")
    try:
        for value in values:
            producer.send(topic, key=orjson.loads(value)["account_id"].encode(), value=value)
        producer.flush()
    finally:
        producer.close()
    return time.perf_counter() - started


def run_mode(mode: str, args: argparse.Namespace, topic: str, tag: str,
             workdir: Path) -> dict[str, Any]:
    """One mode in a subprocess; its result, or ``{"error": ...}`` with the output's tail."""
    result = workdir / f"{mode}.json"
    log_path = workdir / f"{mode}.log"
    command = [sys.executable, str(Path(__file__).resolve()), "--child", mode,
               "--bootstrap", args.bootstrap, "--topic", topic, "--events", str(args.events),
               "--partitions", str(args.partitions), "--app-id", f"faust-bench-{tag}-{mode}",
               "--result", str(result), "--workdir", str(workdir)]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, cwd=workdir, stdout=log, stderr=subprocess.STDOUT)
        try:
            code = process.wait(timeout=args.timeout)
            error = None if code == 0 else f"exit code {code}"
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            code = None
            error = f"timed out after {args.timeout:.0f} s (killed)"
    exited = time.monotonic()
    figures = json.loads(result.read_text()) if result.exists() else None
    if figures is not None:
        figures["stop"] = exited - figures["done_at"] if code is not None else None
    if figures is None or error is not None:
        text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", log_path.read_text(errors="replace"))
        tail = text.splitlines()[-args.tail:]
        out: dict[str, Any] = {"error": error or "no result written", "tail": tail,
                               "log": str(log_path)}
        if figures is not None:  # measured, but did not exit cleanly
            out["figures"] = figures
        return out
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", default="127.0.0.1:19592")
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--partitions", type=int, choices=(1, 6), default=6)
    parser.add_argument("--days", type=int, default=7, help="of generated traffic")
    parser.add_argument("--modes", default=",".join(MODES),
                        help=f"comma-separated, of {', '.join(MODES)}")
    parser.add_argument("--timeout", type=float, default=300.0, help="per mode, seconds")
    parser.add_argument("--tail", type=int, default=40, help="output lines shown on failure")
    # internal: one mode in a subprocess
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--topic", help=argparse.SUPPRESS)
    parser.add_argument("--app-id", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    modes = [m for m in args.modes.split(",") if m]
    unknown = set(modes) - set(MODES)
    if unknown:
        parser.error(f"unknown modes: {', '.join(sorted(unknown))}")
    workdir = Path(tempfile.mkdtemp(prefix="faust-bench-"))
    tag = uuid.uuid4().hex[:8]
    topic = f"faust-bench-{tag}"
    started = time.perf_counter()
    values = make_events(args.events, args.days)
    print(f"{len(values):,} events generated in {time.perf_counter() - started:.1f} s "
          f"({sum(map(len, values)) / len(values):.0f} bytes mean); work dir {workdir}")
    seconds = produce(args.bootstrap, topic, args.partitions, values)
    del values
    print(f"produced to {topic} ({args.partitions} partition(s)) in {seconds:.1f} s "
          f"({args.events / seconds:,.0f}/s)", flush=True)

    results: dict[str, dict[str, Any]] = {}
    for mode in modes:
        results[mode] = run_mode(mode, args, topic, tag, workdir)
        got = results[mode]
        state = (f"failed: {got['error']}" if "error" in got
                 else f"{got['events']:,} in {got['seconds']:.2f} s")
        print(f"  {mode}: {state}", flush=True)

    base = results.get("faust-table", {})
    base_rate = base["events"] / base["seconds"] if "seconds" in base else None
    print()
    print(f"{'mode':<12} {'events':>9} {'seconds':>8} {'events/s':>10} {'x table':>8} "
          f"{'cpu %':>6} {'start-up s':>10} {'/s incl. start-up':>17} {'stop s':>7}")
    for mode, got in results.items():
        if "error" in got:
            print(f"{mode:<12} FAILED: {got['error']}")
            continue
        rate = got["events"] / got["seconds"]
        ratio = f"{rate / base_rate:.2f}" if base_rate else "n/a"
        whole = got["events"] / (got["startup"] + got["seconds"])
        print(f"{mode:<12} {got['events']:>9,} {got['seconds']:>8.2f} {rate:>10,.0f} "
              f"{ratio:>8} {100 * got['cpu'] / got['seconds']:>6.0f} {got['startup']:>10.1f} "
              f"{whole:>17,.0f} {got['stop']:>7.1f}")
    for mode, got in results.items():
        if "error" in got:
            print(f"\n--- {mode} failed ({got['error']}); last lines of {got['log']}:")
            print("\n".join(got["tail"]))
    print(json.dumps({"topic": topic, "partitions": args.partitions, "events": args.events,
                      "results": results}, default=str))


# ---------------------------------------------------------------------------------------------
# child: one mode


class Meter:
    """Counts events; times the first and the N-th; writes the figures to ``path``."""

    def __init__(self, target: int, path: str, began: float) -> None:
        self.target = target
        self.path = path
        self.began = began
        self.count = 0
        self.first: float | None = None
        self.done: float | None = None
        self.cpu_first = self.cpu_done = 0.0

    def add(self, n: int) -> bool:
        """Counts ``n`` more; True once the target is reached (the first time only)."""
        if self.first is None:
            self.first = time.monotonic()
            self.cpu_first = time.process_time()
        self.count += n
        if self.done is not None or self.count < self.target:
            return False
        self.done = time.monotonic()
        self.cpu_done = time.process_time()
        return True

    def finish(self, **extra: Any) -> None:
        """Writes the figures (after ``add`` returned True), with ``extra`` ones."""
        assert self.first is not None and self.done is not None
        Path(self.path).write_text(json.dumps({
            "events": self.count, "seconds": self.done - self.first,
            "startup": self.first - self.began, "done_at": self.done,
            "cpu": self.cpu_done - self.cpu_first, **extra}))


def child(args: argparse.Namespace) -> None:
    began = time.monotonic()
    meter = Meter(args.events, args.result, began)
    if args.child == "aiokafka":
        asyncio.run(consume_aiokafka(args, meter))
    else:
        run_faust(args, meter)


async def consume_aiokafka(args: argparse.Namespace, meter: Meter) -> None:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        args.topic, bootstrap_servers=args.bootstrap, group_id=args.app_id,
        auto_offset_reset="earliest", enable_auto_commit=True,
        max_partition_fetch_bytes=4 * 1024 * 1024, fetch_max_bytes=64 * 1024 * 1024)
    await consumer.start()
    try:
        while meter.done is None:
            batch = await consumer.getmany(timeout_ms=200, max_records=TAKE)
            for messages in batch.values():
                for message in messages:
                    orjson.loads(message.value)
                if messages:
                    meter.add(len(messages))
        meter.finish()
    finally:
        await consumer.stop()


def run_faust(args: argparse.Namespace, meter: Meter) -> None:
    import faust

    app = faust.App(
        args.app_id, broker=f"kafka://{args.bootstrap}", store="memory://",
        web_enabled=False, value_serializer="raw", key_serializer="raw",
        consumer_auto_offset_reset="earliest", topic_partitions=args.partitions,
        topic_replication_factor=1, datadir=str(Path(args.workdir) / f"{args.app_id}-data"))
    topic = app.topic(args.topic, key_serializer="raw", value_serializer="raw")
    worker = faust.Worker(app, loglevel="warning")
    stopping: list[asyncio.Future[None]] = []

    def stop() -> None:
        # The agent must not await its own stop (stopping the app waits for the agent).
        stopping.append(asyncio.ensure_future(worker.stop()))

    if args.child == "faust-table":
        counts = app.Table("counts", default=int, partitions=args.partitions)

        @app.agent(topic)
        async def table_agent(stream: faust.StreamT) -> None:
            async for value in stream:
                counts[orjson.loads(value)["account_id"]] += 1
                if meter.add(1):
                    meter.finish(table_total=sum(counts.values()))
                    stop()

    elif args.child == "faust-bare":

        @app.agent(topic)
        async def bare_agent(stream: faust.StreamT) -> None:
            async for value in stream:
                orjson.loads(value)
                if meter.add(1):
                    meter.finish()
                    stop()

    else:

        @app.agent(topic)
        async def take_agent(stream: faust.StreamT) -> None:
            async for values in stream.take(TAKE, within=1.0):
                for value in values:
                    orjson.loads(value)
                if meter.add(len(values)):
                    meter.finish()
                    stop()

    worker.execute_from_commandline()


if __name__ == "__main__":
    main()
