"""Entry points of the streaming commands (``produce``, ``worker``, ``hook``)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path

from pipeline.kafka_settings import KafkaSettings, env_int

__all__ = ["main"]


def main(args: argparse.Namespace) -> int:
    if args.command == "produce":
        from pipeline.produce import produce_file

        settings = KafkaSettings.from_env(bootstrap=args.bootstrap,
                                          replication_factor=args.replication_factor)
        summary = produce_file(args.input, settings, partitions=args.partitions)
        print(summary.render(), file=sys.stderr)
        return 0
    if args.command == "hook":
        return _hook(args)
    return _worker(args)


def _hook(args: argparse.Namespace) -> int:
    from pipeline.cli import hook_factory
    from pipeline.hook import HookConfig, run_hook

    env = os.environ
    make_sink = hook_factory(args, env)
    if make_sink is None:
        raise ValueError("no restriction hook endpoint: pass --url or set ABUSE_HOOK_URL")
    settings = KafkaSettings.from_env(bootstrap=args.bootstrap, topic_prefix=args.topic_prefix,
                                      group_id=args.group_id)
    config = HookConfig(
        kafka=settings, make_sink=make_sink, start=args.start,
        give_up_after=args.give_up_after, from_topic=args.from_topic,
        metrics_host=args.metrics_host or env.get("ABUSE_METRICS_HOST", "127.0.0.1"),
        metrics_port=args.metrics_port if args.metrics_port is not None else env_int(
            env, "ABUSE_HOOK_METRICS_PORT", 9109))
    _json_logs()
    return asyncio.run(run_hook(config))


def _worker(args: argparse.Namespace) -> int:
    from pipeline.cli import engine_factory, hook_factory
    from pipeline.worker import WorkerConfig, detector_fingerprint, run_worker

    env = os.environ
    settings = KafkaSettings.from_env(bootstrap=args.bootstrap, topic_prefix=args.topic_prefix,
                                      group_id=args.group_id,
                                      replication_factor=args.replication_factor)
    make_engine = engine_factory(args)
    metrics_port = args.metrics_port if args.metrics_port is not None else env_int(
        env, "ABUSE_METRICS_PORT", 9108)
    key_shards = args.key_shards if args.key_shards is not None else env_int(
        env, "ABUSE_KEY_SHARDS", 1)
    fingerprint = detector_fingerprint(make_engine())
    if key_shards > 1:  # a lane's checkpoints restore only into the same split
        from pipeline.keyshards import CombineEngine

        fingerprint = f"{fingerprint}.k{key_shards}"
        CombineEngine.like(make_engine(), count=key_shards, fingerprint=fingerprint)  # checks
    stages = args.stages if args.stages is not None else env.get("ABUSE_STAGES")
    config = WorkerConfig(
        kafka=settings, engine_factory=make_engine,
        fingerprint=fingerprint, key_shards=key_shards,
        clickhouse=args.clickhouse or env.get("ABUSE_CLICKHOUSE"),
        state_dir=Path(args.state_dir or env.get("ABUSE_STATE_DIR", "worker-state")),
        checkpoints=_checkpoints(args.checkpoints or env.get("ABUSE_CHECKPOINTS", "kafka")),
        lateness=args.lateness, idle_flush=args.idle_flush, partitions=args.partitions,
        checkpoint_seconds=args.checkpoint_seconds,
        metrics_host=args.metrics_host or env.get("ABUSE_METRICS_HOST", "127.0.0.1"),
        metrics_port=metrics_port,
        purge_seconds=float(env.get("ABUSE_PURGE_SECONDS", "60")),
        hook=hook_factory(args, env),
        stages=_stages(stages.split(",") if isinstance(stages, str) else stages, key_shards),
        # --detectors picks a detection lane: its own consumer group and checkpoint, so lanes
        # with different detectors run side by side over the same sequenced events
        lane="+".join(sorted(args.detectors)) if args.detectors else "")
    _json_logs()
    return asyncio.run(run_worker(config))


def _stages(names: list[str] | None, key_shards: int) -> frozenset[str]:
    """The stages asked for (all that apply by default), checked against ``--key-shards``."""
    from pipeline.worker import STAGES

    if key_shards < 1:
        raise SystemExit(f"--key-shards / ABUSE_KEY_SHARDS must be 1 or more, not {key_shards}")
    if names is None:
        return STAGES if key_shards > 1 else STAGES - {"shard"}
    names = [name.strip() for name in names if name.strip()]
    unknown = sorted(set(names) - STAGES)
    if unknown or not names:
        raise SystemExit(f"--stages / ABUSE_STAGES takes ingest, detect and shard, not "
                         f"{','.join(names) or 'nothing'}")
    if "shard" in names and key_shards < 2:
        raise SystemExit("the shard stage runs key shards: give --key-shards 2 or more")
    return frozenset(names)


def _checkpoints(where: str) -> str:
    if where not in ("kafka", "file"):
        raise SystemExit(f"ABUSE_CHECKPOINTS must be kafka or file, not {where!r}")
    return where


def _json_logs() -> None:
    """One JSON object per line on stderr: what log shippers expect from a service."""
    from pythonjsonlogger.json import JsonFormatter

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter("%(asctime)s %(levelname)s %(name)s %(message)s",
                                       rename_fields={"asctime": "time", "levelname": "level"}))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    logging.getLogger("kafka").setLevel(logging.WARNING)
    for chatty in ("faust", "mode"):  # service start/stop banners at INFO
        logging.getLogger(chatty).setLevel(logging.WARNING)
