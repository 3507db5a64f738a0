"""Output sinks in Quix Streams' spirit: ``setup()`` connects, ``add()`` buffers, ``flush()``
writes one batch (and keeps it when the write fails, for a retry), ``close()`` releases.

The streaming worker commits Kafka offsets only after ``flush()`` returned for the flags those
offsets produced; flag ids are deterministic and ``abuse.flags`` is a ReplacingMergeTree, so a
batch written twice is harmless (query with ``FINAL``).
"""

from __future__ import annotations

import gzip
import hashlib
import hmac
import sys
from abc import ABC, abstractmethod
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import msgspec

from schemas import clickhouse_ddl
from schemas.flags import SEVERITY_RANK, DeadLetter, Flag

__all__ = [
    "BaseSink",
    "ClickHouseDeadLetterSink",
    "ClickHouseFlagSink",
    "JsonlSink",
    "RestrictionHookSink",
    "SinkError",
    "connect_clickhouse",
]

_encoder = msgspec.json.Encoder()


class SinkError(Exception):
    """A sink could not be set up or written; the message says which and why.

    ``status`` is the HTTP status an endpoint answered with (``None``: no answer, or not
    HTTP).
    """

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class BaseSink(ABC):
    # whether the worker retries a failed flush in place (a server restarting) before it stops
    retry_in_place = False

    def __init__(self) -> None:
        self._buffer: list[Any] = []

    def setup(self) -> None:  # noqa: B027 - optional hook
        """Open connections; called once before the first ``add``."""

    def add(self, record: Any) -> None:
        self._buffer.append(record)

    def flush(self) -> None:
        """Write the buffer as one batch. A write that fails keeps it, so that a later
        ``flush`` (a retry) writes the same records, none dropped."""
        if not self._buffer:
            return
        self.write(self._buffer)
        self._buffer = []

    @abstractmethod
    def write(self, batch: list[Any]) -> None: ...

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release what ``setup`` opened (after a final ``flush``)."""

    def __enter__(self):
        self.setup()
        return self

    def __exit__(self, *exc) -> None:
        try:
            if exc[0] is None:
                self.flush()
        finally:
            self.close()


class JsonlSink(BaseSink):
    """Flags or dead letters as JSON lines (``.gz`` compressed, ``-`` for stdout)."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path
        self._file: IO[bytes] | None = None

    def setup(self) -> None:
        try:
            if self.path == "-":
                self._file = sys.stdout.buffer
            else:
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
                opener = gzip.open if self.path.endswith(".gz") else open
                self._file = opener(self.path, "wb")
        except OSError as error:
            raise SinkError(f"cannot write {self.path}: {error}") from error

    def write(self, batch: list[Any]) -> None:
        assert self._file is not None, "setup() first"
        self._file.write(b"\n".join(_encoder.encode(record) for record in batch) + b"\n")
        self._file.flush()

    def close(self) -> None:
        if self._file is not None and self.path != "-":
            self._file.close()
        self._file = None


def connect_clickhouse(dsn: str):
    """A clickhouse-connect client for ``chdb://PATH`` (embedded) or ``http(s)://...``.

    Creates the ``abuse`` database and tables if missing.
    """
    import clickhouse_connect

    try:
        client = clickhouse_connect.get_client(dsn=dsn)
        for statement in clickhouse_ddl():
            client.command(statement)
    except Exception as error:  # the driver raises many kinds; all mean "cannot connect"
        hint = ""
        if dsn.startswith("chdb:") and "already running" in str(error).lower():
            hint = " (chdb allows one process per database path: is a worker or demo using it?)"
        raise SinkError(f"cannot open ClickHouse at {dsn}: {error}{hint}") from error
    return client


def _to_datetime(ts: str) -> datetime:
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).astimezone(UTC)


class ClickHouseFlagSink(BaseSink):
    """Flags into ``abuse.flags`` (evidence stored as JSON text)."""

    table = "abuse.flags"
    retry_in_place = True
    columns = ("flag_id", "account_id", "detector", "score", "severity", "ts", "detected_at",
               "reasons", "evidence", "related_accounts", "mode")

    def __init__(self, dsn: str | None = None, *, client=None) -> None:
        super().__init__()
        self.dsn = dsn
        self.client = client
        self._owns_client = client is None

    def setup(self) -> None:
        if self.client is None:
            self.client = connect_clickhouse(self.dsn or "")

    def write(self, batch: list[Flag]) -> None:
        rows = [[f.flag_id, f.account_id, f.detector, f.score, f.severity, _to_datetime(f.ts),
                 _to_datetime(f.detected_at), f.reasons, _encoder.encode(f.evidence).decode(),
                 f.related_accounts, f.mode] for f in batch]
        self._insert(rows)

    def _insert(self, rows: list[list[Any]]) -> None:
        try:
            self.client.insert(self.table, rows, column_names=self.columns)
        except Exception as error:  # the driver raises many kinds; all mean "not written"
            raise SinkError(f"cannot write {len(rows)} rows to ClickHouse {self.table}: "
                            f"{error}") from error

    def close(self) -> None:
        if self._owns_client and self.client is not None:
            self.client.close()
        self.client = None


class ClickHouseDeadLetterSink(ClickHouseFlagSink):
    """Dead letters into ``abuse.dead_letters``."""

    table = "abuse.dead_letters"
    columns = ("source", "reason", "raw", "received_at")

    def write(self, batch: list[DeadLetter]) -> None:
        rows = [[d.source, d.reason, d.raw, _to_datetime(d.received_at)] for d in batch]
        self._insert(rows)


class RestrictionHookSink(BaseSink):
    """The restriction hook: enforced flags at or above ``min_severity`` POSTed to an endpoint
    of the operator's that restricts the accounts (a webhook, as Stripe's or Sift's).

    One POST per flush, body ``{"flags": [flag, ...]}`` (each flag as in the contract), header
    ``X-Abuse-Pipeline-Signature: sha256=<HMAC-SHA256 of the body with the secret>`` when a
    secret is set. Shadow-mode flags never act (they are for analysts to judge), nor do
    allow-listed accounts (the engine never flags them). Flag ids are deterministic, so the
    receiver drops repeats by ``flag_id``: a batch is re-sent after a crash (at least once).

    Throttling and server errors are retried with backoff (``urllib3.Retry``); an endpoint that
    still refuses raises :class:`SinkError`, so nothing is committed past flags it did not take.
    """

    def __init__(self, url: str, *, min_severity: str = "high", secret: str | None = None,
                 timeout: float = 10.0, retries: int = 5, backoff: float = 0.5) -> None:
        super().__init__()
        if min_severity not in SEVERITY_RANK:
            raise ValueError(f"min_severity must be one of {sorted(SEVERITY_RANK)}, "
                             f"got {min_severity!r}")
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"the restriction hook needs an http(s):// URL, got {url!r}")
        self.url = url
        self.min_rank = SEVERITY_RANK[min_severity]
        self.secret = secret.encode() if secret else None
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self._http = None

    def setup(self) -> None:
        import urllib3

        retry = urllib3.Retry(total=self.retries, backoff_factor=self.backoff,
                              status_forcelist=(429, 500, 502, 503, 504),
                              allowed_methods=None, raise_on_status=False)
        self._http = urllib3.PoolManager(retries=retry,
                                         timeout=urllib3.Timeout(total=self.timeout))

    def acts_on(self, flag: Flag) -> bool:
        """Whether the hook acts on this flag: enforced, at or above the severity."""
        return flag.mode == "enforce" and SEVERITY_RANK[flag.severity] >= self.min_rank

    def add(self, record: Flag) -> None:
        if self.acts_on(record):
            self._buffer.append(record)

    def write(self, batch: list[Flag]) -> None:
        import urllib3

        assert self._http is not None, "setup() first"
        body = b'{"flags":[' + b",".join(_encoder.encode(flag) for flag in batch) + b"]}"
        headers = {"Content-Type": "application/json"}
        if self.secret:
            digest = hmac.new(self.secret, body, hashlib.sha256).hexdigest()
            headers["X-Abuse-Pipeline-Signature"] = f"sha256={digest}"
        try:
            response = self._http.request("POST", self.url, body=body, headers=headers)
        except urllib3.exceptions.HTTPError as error:
            raise SinkError(f"restriction hook {self.url} unreachable after {self.retries} "
                            f"retries ({len(batch)} flags not delivered): {error}") from error
        if response.status >= 300:
            text = response.data[:200].decode("utf-8", "replace")
            raise SinkError(f"restriction hook {self.url} answered HTTP {response.status} "
                            f"({len(batch)} flags not delivered): {text}",
                            status=response.status)

    def close(self) -> None:
        if self._http is not None:
            self._http.clear()
        self._http = None
