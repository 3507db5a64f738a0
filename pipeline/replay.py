"""Offline replay: a file of events through the engine, in event-time order, into sinks.

Lines are decoded at the edge; contract violations go to the dead-letter sinks with their
line and reason (never dropped). Valid events pass a reorder buffer (events of different
accounts may be minutes apart) and then the engine. Flags go to every flag sink in batches.
"""

from __future__ import annotations

import gc
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from pipeline.engine import Engine, utc_now
from pipeline.reorder import ReorderBuffer
from pipeline.sinks import BaseSink
from pipeline.sources import number_lines, open_input, read_lines
from schemas.events import DECODE_ERRORS, Event, decode_event, decode_event_or_raise
from schemas.flags import DeadLetter, Flag

__all__ = ["ReplaySummary", "replay", "replay_file"]


@dataclass
class ReplaySummary:
    read: int = 0  # non-blank lines
    accepted: int = 0
    dead_lettered: int = 0
    duplicates: int = 0
    late: int = 0
    suppressed_by_allowlist: int = 0
    flags: Counter = field(default_factory=Counter)  # (detector, severity) -> count
    seconds: float = 0.0
    dead_reasons: Counter = field(default_factory=Counter)

    @property
    def events_per_second(self) -> float:
        return self.read / self.seconds if self.seconds > 0 else 0.0

    def render(self) -> str:
        lines = [
            f"read {self.read} events: {self.accepted} accepted, {self.dead_lettered} "
            f"dead-lettered, {self.duplicates} duplicates dropped, {self.late} late",
            f"{sum(self.flags.values())} flags in {self.seconds:.1f} s "
            f"({self.events_per_second:,.0f} events/s)",
        ]
        by_detector: dict[str, Counter] = {}
        for (detector, severity), count in sorted(self.flags.items()):
            by_detector.setdefault(detector, Counter())[severity] = count
        for detector, counts in by_detector.items():
            parts = ", ".join(f"{counts[s]} {s}" for s in ("high", "medium", "low") if counts[s])
            lines.append(f"  {detector:16s} {sum(counts.values()):6d}  ({parts})")
        if self.suppressed_by_allowlist:
            lines.append(f"  {self.suppressed_by_allowlist} flags suppressed by the allow-list")
        for reason, count in self.dead_reasons.most_common(5):
            lines.append(f"  dead letter x{count}: {reason}")
        return "\n".join(lines)


def replay(
    lines: Iterable[tuple[bytes, str | int]],
    engine: Engine,
    *,
    name: str | None = None,
    flag_sinks: Sequence[BaseSink] = (),
    dead_letter_sinks: Sequence[BaseSink] = (),
    lateness: float = 300.0,
    batch_size: int = 5_000,
) -> ReplaySummary:
    """Run ``(raw line, where)`` pairs through ``engine``; sinks must already be set up.

    With a ``name``, ``lines`` are ``(line as read, lineno)`` instead
    (:func:`~pipeline.sources.number_lines`): the line is stripped of its line end, and its
    ``"name:lineno"`` made, only for a dead letter."""
    # Detection state is long-lived and keeps growing: each full collection walks all of it,
    # and at the default rate (one per 10 middle ones) they cost a sixth of a replay. Ten
    # times rarer while replaying; young objects are collected as often as before.
    thresholds = gc.get_threshold()
    gc.set_threshold(thresholds[0], thresholds[1], max(thresholds[2], 100))
    try:
        return _run(lines, name, engine, flag_sinks=flag_sinks,
                    dead_letter_sinks=dead_letter_sinks, lateness=lateness,
                    batch_size=batch_size)
    finally:
        gc.set_threshold(*thresholds)


def _run(lines, name, engine, *, flag_sinks, dead_letter_sinks, lateness, batch_size):
    summary = ReplaySummary()
    started = time.perf_counter()
    buffer = ReorderBuffer(lateness)
    process = engine.process
    pending = 0
    released = 0

    def events() -> Iterator[tuple[float, str, str, Event]]:
        # decode at the edge: (t, account, event id, event) for the reorder buffer
        decode = decode_event_or_raise
        for raw, where in lines:
            try:
                event = decode(raw)
            except DECODE_ERRORS:
                if name is not None:
                    raw = raw.rstrip(b"\r\n")
                if not raw.strip():
                    continue  # a blank line
                summary.read += 1
                reason = decode_event(raw)[1] or "invalid event"
                if name is not None:
                    where = f"{name}:{where}"
                summary.dead_lettered += 1
                summary.dead_reasons[reason] += 1
                letter = DeadLetter(source=where, reason=reason,  # type: ignore[arg-type]
                                    raw=raw.decode("utf-8", "backslashreplace"),
                                    received_at=utc_now())
                for sink in dead_letter_sinks:
                    sink.add(letter)
                continue
            summary.read += 1
            yield event.ts.timestamp(), event.account_id, event.event_id, event

    def emit(flags: list[Flag]) -> None:
        nonlocal pending
        for flag in flags:
            for sink in flag_sinks:
                sink.add(flag)
        pending += len(flags)
        if pending >= batch_size:
            for sink in flag_sinks:
                sink.flush()
            pending = 0

    # seq: the position in the released (event-time) order, as in the worker
    for t, _, _, _, event in buffer.order(events()):
        released += 1
        flags = process(event, released, t=t)
        if flags:
            emit(flags)
    for event in buffer.flush():
        released += 1
        flags = process(event, released)
        if flags:
            emit(flags)
    for sink in (*flag_sinks, *dead_letter_sinks):
        sink.flush()
    summary.accepted = summary.read - summary.dead_lettered
    summary.late = buffer.late
    summary.duplicates = engine.stats.duplicates
    summary.suppressed_by_allowlist = engine.stats.suppressed_by_allowlist
    summary.flags = Counter(engine.stats.flags)
    summary.seconds = time.perf_counter() - started
    return summary


def replay_file(
    path: str, engine: Engine, *, progress: bool | None = None, **kwargs
) -> ReplaySummary:
    """Replay a JSONL / ``.jsonl.gz`` file or ``-`` (stdin); raises ``SourceError``."""
    stream = open_input(path)
    name = "stdin" if path == "-" else path
    if progress is None:
        progress = sys.stderr.isatty()
    try:
        if progress:
            from tqdm import tqdm

            lines = tqdm(read_lines(stream, name), desc="replay", unit=" lines",
                         unit_scale=True, file=sys.stderr)
            return replay(lines, engine, **kwargs)
        return replay(number_lines(stream, name), engine, name=name, **kwargs)
    finally:
        if path != "-":
            stream.close()
