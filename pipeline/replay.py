"""Offline replay: a file of events through the engine, in event-time order, into sinks.

Lines are decoded at the edge; contract violations go to the dead-letter sinks with their
line and reason (never dropped). Valid events pass a reorder buffer (events of different
accounts may be minutes apart) and then the engine. Flags go to every flag sink in batches.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from pipeline.engine import Engine, utc_now
from pipeline.reorder import ReorderBuffer
from pipeline.sinks import BaseSink
from pipeline.sources import decode_lines, open_input, read_lines
from schemas.flags import DeadLetter

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
    lines: Iterable[tuple[bytes, str]],
    engine: Engine,
    *,
    flag_sinks: Sequence[BaseSink] = (),
    dead_letter_sinks: Sequence[BaseSink] = (),
    lateness: float = 300.0,
    batch_size: int = 5_000,
) -> ReplaySummary:
    """Run decoded ``lines`` through ``engine``; sinks must already be set up."""
    summary = ReplaySummary()
    started = time.perf_counter()
    buffer = ReorderBuffer(lateness)
    pending = 0

    released = 0

    def emit(events) -> None:
        nonlocal pending, released
        for event in events:
            # seq: the position in the released (event-time) order, as in the worker
            released += 1
            for flag in engine.process(event, released):
                for sink in flag_sinks:
                    sink.add(flag)
                pending += 1
        if pending >= batch_size:
            for sink in flag_sinks:
                sink.flush()
            pending = 0

    for kind, where, item in decode_lines(lines):
        summary.read += 1
        if kind == "dead":
            raw, reason = item
            summary.dead_lettered += 1
            summary.dead_reasons[reason] += 1
            letter = DeadLetter(source=where, reason=reason,
                                raw=raw.decode("utf-8", "backslashreplace"), received_at=utc_now())
            for sink in dead_letter_sinks:
                sink.add(letter)
            continue
        summary.accepted += 1
        emit(buffer.push(item.ts.timestamp(), item.account_id, item.event_id, item))
    emit(buffer.flush())
    for sink in (*flag_sinks, *dead_letter_sinks):
        sink.flush()
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
    lines = read_lines(stream, "stdin" if path == "-" else path)
    if progress is None:
        progress = sys.stderr.isatty()
    if progress:
        from tqdm import tqdm

        lines = tqdm(lines, desc="replay", unit=" lines", unit_scale=True, file=sys.stderr)
    try:
        return replay(lines, engine, **kwargs)
    finally:
        if path != "-":
            stream.close()
