"""Wire formats of the contract: events in, flags and dead letters out."""

import re
from importlib.resources import files

from schemas.events import (
    EVENT_TYPES,
    Event,
    Login,
    Purchase,
    Refund,
    Signup,
    Usage,
    decode_event,
    encode_event,
)
from schemas.flags import SEVERITIES, DeadLetter, Flag, decode_flag, encode_flag, severity_of

__all__ = [
    "EVENT_TYPES",
    "SEVERITIES",
    "DeadLetter",
    "Event",
    "Flag",
    "Login",
    "Purchase",
    "Refund",
    "Signup",
    "Usage",
    "clickhouse_ddl",
    "decode_event",
    "decode_flag",
    "encode_event",
    "encode_flag",
    "severity_of",
]


def clickhouse_ddl() -> list[str]:
    """The ClickHouse DDL statements, one per element, in order."""
    text = files("schemas").joinpath("clickhouse.sql").read_text()
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("--")]
    # Statements end with ";" at the end of a line (a ";" inside a string stays put).
    return [stmt.strip() for stmt in re.split(r";[ \t]*$", "\n".join(lines), flags=re.M)
            if stmt.strip()]
