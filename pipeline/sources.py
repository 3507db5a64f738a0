"""Input sources: raw lines with where they came from, decoded at the edge.

>>> import io
>>> [(kind, where) for kind, where, _ in decode_lines(
...     [(b'{"type": "nope"}', "f:1"), (b"", "f:2")])]
[('dead', 'f:1')]
"""

from __future__ import annotations

import gzip
import itertools
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from schemas.events import Event, decode_event

__all__ = ["SourceError", "decode_lines", "number_lines", "open_input", "read_lines"]


class SourceError(Exception):
    """The input cannot be read at all (missing file, not gzip, permission...)."""


def open_input(path: str) -> BinaryIO:
    """Open a JSONL file, a ``.gz`` of one, or ``-`` for standard input."""
    if path == "-":
        return sys.stdin.buffer
    file = Path(path)
    if not file.exists():
        raise SourceError(f"input file {path} does not exist")
    if file.is_dir():
        raise SourceError(f"input {path} is a directory, not a JSONL file")
    try:
        if path.endswith(".gz"):
            stream = gzip.open(file, "rb")  # noqa: SIM115 - the caller closes it
            stream.peek(1)  # fail now, not mid-replay, on a file that is not gzip
            return stream  # type: ignore[return-value]
        return file.open("rb")
    except (OSError, gzip.BadGzipFile) as error:
        raise SourceError(f"cannot read {path}: {error}") from error


def read_lines(stream: BinaryIO, name: str) -> Iterator[tuple[bytes, str]]:
    """Yield ``(line, "name:lineno")`` for every line, blank ones included."""
    try:
        for number, line in enumerate(stream, 1):
            yield line.rstrip(b"\r\n"), f"{name}:{number}"
    except (OSError, EOFError, gzip.BadGzipFile) as error:
        raise SourceError(f"reading {name} failed: {error}") from error


def number_lines(stream: BinaryIO, name: str) -> Iterator[tuple[bytes, int]]:
    """Yield ``(line, lineno)`` for every line, as read (``\\n`` kept): :func:`read_lines`
    without its per-line work, for a hot path that makes ``"name:lineno"`` only when needed."""
    try:
        yield from zip(stream, itertools.count(1))
    except (OSError, EOFError, gzip.BadGzipFile) as error:
        raise SourceError(f"reading {name} failed: {error}") from error


def decode_lines(
    lines: Iterable[tuple[bytes, str]],
) -> Iterator[tuple[str, str, Event | tuple[bytes, str]]]:
    """Yield ``("event", where, event)`` or ``("dead", where, (raw, reason))``; skip blanks."""
    for raw, where in lines:
        if not raw.strip():
            continue
        event, reason = decode_event(raw)
        if event is None:
            yield "dead", where, (raw, reason or "invalid event")
        else:
            yield "event", where, event
