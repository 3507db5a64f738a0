"""Analysts' verdicts on flags, kept in ClickHouse beside them (``abuse.verdicts``).

A verdict names a flag by its id and says whether it was abuse; the latest verdict on a flag
wins (ReplacingMergeTree, ``FINAL``). ``report`` turns them into each detector's precision as
judged by people, the figure to watch when a detector leaves shadow mode.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

__all__ = ["VERDICTS", "record_verdict"]

VERDICTS = ("abuse", "benign")
COLUMNS = ("flag_id", "account_id", "detector", "verdict", "analyst", "note", "recorded_at")


def record_verdict(client: Any, flag_id: str, verdict: str, *, analyst: str, note: str = "",
                   now: datetime | None = None) -> dict[str, Any]:
    """Record ``verdict`` on the flag ``flag_id``; a clear ``ValueError`` if there is none."""
    if verdict not in VERDICTS:
        raise ValueError(f"a verdict is one of {', '.join(VERDICTS)}, not {verdict!r}")
    if not analyst.strip():
        raise ValueError("say who judged the flag (--analyst)")
    found = client.query(
        "SELECT account_id, detector FROM abuse.flags FINAL WHERE flag_id = {flag:String}",
        parameters={"flag": flag_id}).result_rows
    if not found:
        raise ValueError(f"no flag {flag_id!r} in abuse.flags")
    (account_id, detector), = found
    row = {"flag_id": flag_id, "account_id": account_id, "detector": detector,
           "verdict": verdict, "analyst": analyst, "note": note,
           "recorded_at": now or datetime.now(UTC)}
    client.insert("abuse.verdicts", [[row[c] for c in COLUMNS]], column_names=COLUMNS)
    return row
