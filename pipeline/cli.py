"""The ``abuse-pipeline`` command line (see CONTRACT.md for the fixed commands)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence

__all__ = ["engine_factory", "hook_factory", "main"]

log = logging.getLogger("abuse_pipeline")
REPLICATION_HELP = ("replication factor of the topics it creates (or ABUSE_REPLICATION_FACTOR; "
                    "default -1: the broker's default.replication.factor)")


def _csv(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def _detection_options(command: argparse.ArgumentParser) -> None:
    """The options replay and the worker share: they must be able to run the same engine."""
    command.add_argument("--detectors", type=_csv, help="comma-separated subset (default: all)")
    command.add_argument("--shadow", type=_csv, default=[],
                         help="detectors in shadow mode: flags marked mode=shadow")
    command.add_argument("--allowlist", metavar="JSON", help="accounts/attributes never flagged")
    command.add_argument("--settings", metavar="JSON",
                         help='detector settings, e.g. {"trial_cycling": {"threshold": 0.85}}')
    command.add_argument("--lateness", type=float, default=300.0,
                         help="seconds of cross-account disorder to reorder (default 300)")


def _hook_options(command: argparse.ArgumentParser) -> None:
    command.add_argument("--hook", metavar="URL",
                         help="restriction hook: POST enforced flags to this endpoint (the "
                              "worker also reads ABUSE_HOOK_URL; the HMAC secret comes from "
                              "ABUSE_HOOK_SECRET)")
    from schemas.flags import SEVERITIES

    command.add_argument("--hook-min-severity", choices=SEVERITIES, default=None,
                         help="the least severity the hook acts on (or "
                              "ABUSE_HOOK_MIN_SEVERITY; default high)")


def hook_factory(args: argparse.Namespace, env=None, *, url_from_env: bool = True):
    """A function that makes the restriction hook sink, or ``None`` without a hook URL.

    ``url_from_env=False``: only ``--hook`` names the endpoint (replay: restricting accounts
    from a file of past events must be asked for on the command line, not inherited).
    """
    from pipeline.sinks import RestrictionHookSink

    env = os.environ if env is None else env
    url = getattr(args, "hook", None) or (env.get("ABUSE_HOOK_URL") if url_from_env else None)
    if not url:
        return None
    severity = getattr(args, "hook_min_severity", None) or env.get("ABUSE_HOOK_MIN_SEVERITY",
                                                                   "high")
    secret = env.get("ABUSE_HOOK_SECRET")

    def make() -> RestrictionHookSink:
        return RestrictionHookSink(url, min_severity=severity, secret=secret)

    make()  # a bad URL or severity fails now, with its message
    return make


def engine_factory(args: argparse.Namespace):
    """A function that builds the engine the options describe (checked once, now)."""
    from detectors import build
    from detectors.registry import load_settings
    from pipeline.allowlist import Allowlist
    from pipeline.engine import Engine

    allowlist = Allowlist.from_file(args.allowlist) if args.allowlist else None
    settings = load_settings(args.settings) if args.settings else None

    def make() -> Engine:
        return Engine(build(args.detectors, settings=settings), shadow=args.shadow,
                      allowlist=allowlist)

    make()  # bad settings fail here, with their message, not inside a running worker
    return make


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="abuse-pipeline", description=(
        "Detect SaaS usage abuse (trial cycling, login abuse, refund abuse) in event streams."))
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    replay = commands.add_parser("replay", help="run every detector over a file of events")
    replay.add_argument("--input", required=True, help="events: JSONL, .jsonl.gz, or - for stdin")
    replay.add_argument("--output", required=True, help="flags JSONL to write")
    replay.add_argument("--clickhouse", metavar="DSN",
                        help="also write to ClickHouse: chdb:///path/flags.chdb or http://host:8123")
    replay.add_argument("--dead-letter", metavar="FILE", help="invalid lines as JSONL")
    _detection_options(replay)
    replay.add_argument("--no-progress", action="store_true", help="no progress bar")
    _hook_options(replay)

    generate = commands.add_parser("generate", help="synthetic traffic with labelled abuse")
    generate.add_argument("--accounts", type=int, required=True)
    generate.add_argument("--days", type=int, required=True)
    generate.add_argument("--seed", type=int, required=True)
    generate.add_argument("--output", required=True, help="events JSONL (.gz compresses)")
    generate.add_argument("--labels", help="ground truth JSON")

    evaluate = commands.add_parser("evaluate", help="precision/recall of flags against labels")
    evaluate.add_argument("--labels", required=True)
    evaluate.add_argument("--flags", required=True)
    evaluate.add_argument("--json", action="store_true", help="print JSON instead of a table")

    report = commands.add_parser("report", help="what was flagged and why, from ClickHouse")
    report.add_argument("--clickhouse", required=True, metavar="DSN")

    verdict = commands.add_parser("verdict", help="record an analyst's verdict on a flag")
    verdict.add_argument("--clickhouse", required=True, metavar="DSN")
    verdict.add_argument("--flag-id", required=True)
    from pipeline.verdicts import VERDICTS

    verdict.add_argument("--verdict", required=True, choices=VERDICTS)
    verdict.add_argument("--analyst", default=os.environ.get("USER", ""),
                         help="who judged it (default: $USER)")
    verdict.add_argument("--note", default="", help="why, in a sentence")

    produce = commands.add_parser("produce", help="publish events to their Kafka topics")
    produce.add_argument("--input", required=True)
    produce.add_argument("--bootstrap", required=True, metavar="HOST:PORT")
    produce.add_argument("--partitions", type=int, default=6,
                         help="partitions for topics that do not exist yet (default 6)")
    produce.add_argument("--replication-factor", type=int, default=None,
                         help=REPLICATION_HELP)

    worker = commands.add_parser(
        "worker", help="the streaming worker: events.* topics -> flags (Kafka, ClickHouse)")
    worker.add_argument("--bootstrap", metavar="HOST:PORT",
                        help="Kafka bootstrap servers (or ABUSE_BOOTSTRAP)")
    worker.add_argument("--clickhouse", metavar="DSN",
                        help="flags and dead letters to ClickHouse: chdb:///path or "
                             "http://host:8123 (or ABUSE_CLICKHOUSE; without one, flags go "
                             "to the topic only)")
    worker.add_argument("--group-id", help="consumer group and internal topic names "
                        "(or ABUSE_GROUP_ID; default abuse-pipeline)")
    worker.add_argument("--stages", type=_csv, default=None,
                        help="which stages this process runs: ingest, detect, shard (with "
                             "--key-shards), comma-separated (or ABUSE_STAGES; default all "
                             "of them). Separate processes use a core each")
    worker.add_argument("--key-shards", type=int, default=None,
                        help="split the lane's detectors by key over this many shards, which "
                             "the group's workers share out (or ABUSE_KEY_SHARDS; default 1: "
                             "not split; every worker of the lane the same)")
    worker.add_argument("--topic-prefix", help="prefix of every topic (or ABUSE_TOPIC_PREFIX)")
    worker.add_argument("--checkpoints", choices=("kafka", "file"), default=None,
                        help="where detection checkpoints go (or ABUSE_CHECKPOINTS): kafka (the "
                             "default: a compacted topic, so any worker of the group can take "
                             "over, on any machine) or file (in --state-dir)")
    worker.add_argument("--state-dir", default=None,
                        help="with --checkpoints file: the checkpoint directory (or "
                             "ABUSE_STATE_DIR; default ./worker-state), which workers of one "
                             "group that take over from each other must share")
    worker.add_argument("--partitions", type=int, default=6,
                        help="partitions for event topics the worker creates (default 6)")
    worker.add_argument("--replication-factor", type=int, default=None, help=REPLICATION_HELP)
    worker.add_argument("--metrics-port", type=int, default=None,
                        help="Prometheus /metrics port (or ABUSE_METRICS_PORT; default 9108, "
                             "0: none)")
    worker.add_argument("--metrics-host", default=None,
                        help="address for /metrics (or ABUSE_METRICS_HOST; default 127.0.0.1)")
    worker.add_argument("--checkpoint-seconds", type=float, default=5.0,
                        help="how often detection state is checkpointed (default 5; longer when a "
                             "snapshot would take over 5 %% of the time)")
    worker.add_argument("--idle-flush", type=float, default=2.0,
                        help="seconds of quiet, every partition caught up, before held events "
                             "are released (default 2)")
    _detection_options(worker)
    _hook_options(worker)

    hook = commands.add_parser(
        "hook", help="the restriction hook as its own consumer of abuse.flags: an endpoint "
                     "that is down holds back only the hook, never detection")
    hook.add_argument("--bootstrap", metavar="HOST:PORT",
                      help="Kafka bootstrap servers (or ABUSE_BOOTSTRAP)")
    hook.add_argument("--url", dest="hook", metavar="URL",
                      help="the endpoint that restricts accounts (or ABUSE_HOOK_URL; the HMAC "
                           "secret comes from ABUSE_HOOK_SECRET)")
    from schemas.flags import SEVERITIES

    hook.add_argument("--min-severity", dest="hook_min_severity", default=None,
                      choices=SEVERITIES,
                      help="the least severity it acts on (or ABUSE_HOOK_MIN_SEVERITY; "
                           "default high)")
    hook.add_argument("--group-id", help="the workers' group id: the hook's consumer group is "
                      "GROUP.hook (or ABUSE_GROUP_ID; default abuse-pipeline)")
    hook.add_argument("--topic-prefix", help="prefix of every topic (or ABUSE_TOPIC_PREFIX)")
    hook.add_argument("--start", choices=("earliest", "latest"), default="earliest",
                      help="where a hook group without committed offsets begins: every flag "
                           "still on the topic (default), or only new ones")
    hook.add_argument("--give-up-after", type=float, default=3600.0, metavar="SECONDS",
                      help="how long a flag the endpoint refuses on its own (HTTP 400, 404, "
                           "409, 410, 413, 415, 422) is tried again before it goes to "
                           "abuse.hook.refused and the hook goes on (default 3600)")
    hook.add_argument("--from-topic", default="abuse.flags",
                      choices=("abuse.flags", "abuse.hook.refused"),
                      help="the topic to deliver (without the prefix): abuse.hook.refused, in "
                           "a group of its own, sends the refused flags again")
    hook.add_argument("--metrics-port", type=int, default=None,
                      help="Prometheus /metrics port (or ABUSE_HOOK_METRICS_PORT; default "
                           "9109, 0: none)")
    hook.add_argument("--metrics-host", default=None,
                      help="address for /metrics (or ABUSE_METRICS_HOST; default 127.0.0.1)")
    return parser


def _replay(args: argparse.Namespace) -> int:
    from pipeline.replay import replay_file
    from pipeline.sinks import ClickHouseDeadLetterSink, ClickHouseFlagSink, JsonlSink

    engine = engine_factory(args)()
    flag_sinks = [JsonlSink(args.output)]
    dead_sinks = [JsonlSink(args.dead_letter)] if args.dead_letter else []
    if args.clickhouse:
        flags_table = ClickHouseFlagSink(args.clickhouse)
        flags_table.setup()
        flag_sinks.append(flags_table)
        dead_sinks.append(ClickHouseDeadLetterSink(client=flags_table.client))
    if (make_hook := hook_factory(args, url_from_env=False)) is not None:
        flag_sinks.append(make_hook())
    sinks = [*flag_sinks, *dead_sinks]
    try:
        for sink in sinks:
            sink.setup()
        summary = replay_file(args.input, engine, flag_sinks=flag_sinks,
                              dead_letter_sinks=dead_sinks, lateness=args.lateness,
                              progress=False if args.no_progress else None)
    finally:
        for sink in reversed(sinks):
            sink.close()
    print(summary.render(), file=sys.stderr)
    return 0


def _generate(args: argparse.Namespace) -> int:
    from pipeline.generate import generate, write_events, write_labels

    if args.accounts <= 0 or args.days <= 0:
        raise ValueError("--accounts and --days must be positive")
    events, labels = generate(accounts=args.accounts, days=args.days, seed=args.seed)
    write_events(events, args.output)
    if args.labels:
        write_labels(labels, args.labels)
    print(f"wrote {len(events)} events for {args.accounts} accounts over {args.days} days "
          f"to {args.output}", file=sys.stderr)
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from pipeline.evaluate import evaluate

    with open(args.labels, encoding="utf-8") as file:
        labels = json.load(file)
    with open(args.flags, encoding="utf-8") as file:
        flags = [json.loads(line) for line in file if line.strip()]
    result = evaluate(labels, flags)
    if args.json:
        print(json.dumps({"detectors": result.detectors, "abuse_kinds": result.by_kind,
                          "benign": result.benign}, indent=2))
    else:
        print(result.render())
    return 0


def _report(args: argparse.Namespace) -> int:
    from pipeline.report import render_report
    from pipeline.sinks import connect_clickhouse

    client = connect_clickhouse(args.clickhouse)
    try:
        print(render_report(client))
    finally:
        client.close()
    return 0


def _verdict(args: argparse.Namespace) -> int:
    from pipeline.sinks import connect_clickhouse
    from pipeline.verdicts import record_verdict

    client = connect_clickhouse(args.clickhouse)
    try:
        row = record_verdict(client, args.flag_id, args.verdict, analyst=args.analyst,
                             note=args.note)
    finally:
        client.close()
    print(f"{row['verdict']}: flag {row['flag_id']} ({row['detector']}, account "
          f"{row['account_id']}) by {row['analyst']}", file=sys.stderr)
    return 0


def _streaming(args: argparse.Namespace) -> int:
    from pipeline import streaming

    return streaming.main(args)


COMMANDS = {"replay": _replay, "generate": _generate, "evaluate": _evaluate, "report": _report,
            "verdict": _verdict, "produce": _streaming, "worker": _streaming,
            "hook": _streaming}


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    from pipeline.sinks import SinkError
    from pipeline.sources import SourceError

    try:
        return COMMANDS[args.command](args)
    except (SourceError, SinkError, ValueError, OSError) as error:
        print(f"abuse-pipeline {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
