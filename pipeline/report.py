"""What was flagged and why, straight from ClickHouse (``FINAL``: each flag once)."""

from __future__ import annotations

__all__ = ["QUERIES", "render_report"]

QUERIES = {
    "by detector": """
        SELECT detector, severity, count() AS flags, uniqExact(account_id) AS accounts
        FROM abuse.flags FINAL GROUP BY detector, severity
        ORDER BY detector, indexOf(['high', 'medium', 'low'], severity)""",
    "top reasons": """
        SELECT detector,
               replaceRegexpAll(reason, '([a-z]+-[0-9a-f]{4,}|[0-9][0-9a-f.:/%]*)', '#') AS shape,
               count() AS flags
        FROM abuse.flags FINAL ARRAY JOIN reasons AS reason
        GROUP BY detector, shape ORDER BY flags DESC LIMIT 12""",
    "largest trial rings": """
        SELECT account_id, length(related_accounts) + 1 AS ring_size, round(score, 2) AS score,
               reasons[1] AS first_reason
        FROM abuse.flags FINAL WHERE detector = 'trial_cycling'
        ORDER BY ring_size DESC, score DESC, account_id LIMIT 5""",
    "dead letters": "SELECT count() AS dead_letters FROM abuse.dead_letters FINAL",
    "analyst verdicts (abuse-pipeline verdict)": """
        SELECT detector, countIf(verdict = 'abuse') AS abuse,
               countIf(verdict = 'benign') AS benign,
               round(abuse / (abuse + benign), 3) AS precision
        FROM abuse.verdicts FINAL GROUP BY detector ORDER BY detector""",
}

HINTS = """\
Query further (clickhouse-connect, chdb or clickhouse-client; always FINAL):
  SELECT * FROM abuse.flags FINAL WHERE account_id = '<account>' ORDER BY ts;
  SELECT detector, toDate(ts) AS day, count() FROM abuse.flags FINAL GROUP BY ALL ORDER BY day;
  SELECT account_id, JSONExtractInt(evidence, 'ring_size') AS ring, related_accounts
    FROM abuse.flags FINAL WHERE detector = 'trial_cycling' ORDER BY ring DESC LIMIT 20;
  SELECT source, reason FROM abuse.dead_letters FINAL LIMIT 20;
  SELECT f.account_id, f.detector, f.reasons, v.verdict, v.analyst, v.note
    FROM abuse.flags AS f FINAL INNER JOIN abuse.verdicts AS v FINAL USING (flag_id);"""


def _table(columns: list[str], rows: list[tuple]) -> str:
    cells = [[str(c) for c in columns]] + [[str(v) for v in row] for row in rows]
    widths = [min(90, max(len(row[i]) for row in cells)) for i in range(len(columns))]
    lines = []
    for n, row in enumerate(cells):
        lines.append("  ".join(v[:90].ljust(w) for v, w in zip(row, widths, strict=True)))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def render_report(client) -> str:
    """A short plain-text report of the flags in ``abuse.flags``."""
    parts = []
    for title, sql in QUERIES.items():
        result = client.query(sql)
        body = (_table(list(result.column_names), result.result_rows) if result.result_rows
                else "(none)")
        parts.append(f"== {title}\n{body}")
    parts.append(HINTS)
    return "\n\n".join(parts)
