"""The pipeline: the pure engine, sources and sinks at the edges, replay and the CLI.

Modules are imported where used so that ``abuse-pipeline --help`` stays fast and nothing
heavy (faust, ClickHouse drivers) loads at import.
"""

__all__ = [
    "allowlist",
    "checkpoints",
    "cli",
    "engine",
    "evaluate",
    "generate",
    "kafka_settings",
    "metrics",
    "produce",
    "reorder",
    "replay",
    "report",
    "sequencing",
    "sinks",
    "sources",
    "streaming",
    "verdicts",
    "worker",
]
