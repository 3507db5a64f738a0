"""Entry points of the streaming commands (``produce``, ``worker``)."""

from __future__ import annotations

import argparse
import sys

from pipeline.kafka_settings import KafkaSettings

__all__ = ["main"]


def main(args: argparse.Namespace) -> int:
    settings = KafkaSettings.from_env(bootstrap=args.bootstrap)
    if args.command == "produce":
        from pipeline.produce import produce_file

        summary = produce_file(args.input, settings, partitions=args.partitions)
        print(summary.render(), file=sys.stderr)
        return 0
    print("abuse-pipeline worker: the streaming worker is not built yet (issue: Streaming); "
          "use `abuse-pipeline replay` for now", file=sys.stderr)
    return 2
