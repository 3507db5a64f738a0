"""Replay end to end: files in (plain, gz, stdin), flags and dead letters out, chdb tables."""

import gzip
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from detectors.testing import make_event
from pipeline.cli import main
from schemas import encode_event

REPO = Path(__file__).resolve().parents[2]
CHECK_FLAGS = REPO.parent / "shared" / "tools" / "check_flags.py"

INVALID = [
    b"{this is not json",
    b'["an", "array"]',
    b'{"type": "teleport", "event_id": "x1", "ts": "2026-11-01T00:00:00Z", "account_id": "a"}',
    b'{"type": "usage", "event_id": "x2", "ts": "2026-11-01T00:00:00", "account_id": "a",'
    b' "feature": "f", "units": 1}',
    b'{"type": "usage", "event_id": "x3", "ts": "2026-11-01T00:00:00Z", "account_id": "a",'
    b' "feature": "f", "units": -4}',
    b'{"type": "login", "event_id": "x4", "ts": "2026-11-01T00:00:00Z", "account_id": "a",'
    b' "ip": "192.0.2.1", "device_id": "d"}',
    b'{"type": "refund", "event_id": "x5", "ts": "2026-11-01T00:00:00Z", "account_id": "a",'
    b' "order_id": "o", "amount": 0, "currency": "USD"}',
    b"\xff\xfe\x00garbage",
]


def abusive_events():
    """A ring, a stuffing attack and ordinary traffic, in time order."""
    events = [make_event("signup", account_id=f"ring{i}", t=3600.0 * i, device_id="dev-ring",
                         email=f"ring{i}z@example.com", ip=f"198.51.{i}.2", event_id=f"s{i}")
              for i in range(4)]
    events += [make_event("login", account_id=f"victim{i}", t=20_000.0 + 30 * i,
                          ip="203.0.113.66", device_id=f"dv{i}", success=False, event_id=f"l{i}")
               for i in range(12)]
    events += [make_event("usage", account_id=f"user{i % 7}", t=30_000.0 + 11 * i,
                          units=1.0, event_id=f"u{i}") for i in range(200)]
    return sorted(events, key=lambda e: e.ts)


def write_input(path: Path, events, *, invalid=INVALID, blank=True):
    lines = [encode_event(e) for e in events]
    for n, bad in enumerate(invalid):
        lines.insert(3 + 5 * n, bad)
    if blank:
        lines.insert(1, b"")
    data = b"\n".join(lines) + b"\n"
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)
    return path


def read_jsonl(path: Path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def replay(tmp_path, source, *extra, name="flags.jsonl"):
    output = tmp_path / name
    code = main(["replay", "--input", str(source), "--output", str(output), "--no-progress",
                 *extra])
    assert code == 0
    return output


def contract_check(*paths):
    if not CHECK_FLAGS.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{CHECK_FLAGS} is missing")
        pytest.skip(f"{CHECK_FLAGS} not beside the checkout")
    result = subprocess.run([sys.executable, str(CHECK_FLAGS), *map(str, paths)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_every_line_is_accepted_or_dead_lettered_with_its_line_and_reason(tmp_path, capsys):
    source = write_input(tmp_path / "events.jsonl", abusive_events())
    dead = tmp_path / "dead.jsonl"
    flags = read_jsonl(replay(tmp_path, source, "--dead-letter", str(dead)))
    letters = read_jsonl(dead)
    summary = capsys.readouterr().err
    accepted = len(abusive_events())
    assert f"read {accepted + len(INVALID)} events: {accepted} accepted, {len(INVALID)} " \
           "dead-lettered" in summary
    assert len(letters) == len(INVALID)
    assert all(letter["source"].startswith(f"{source}:") for letter in letters)
    assert all(letter["reason"] and letter["raw"] for letter in letters)
    reasons = " | ".join(letter["reason"] for letter in letters)
    for expected in ("not valid JSON", "`$.type`", "timezone", "`$.units`", "`success`",
                     "`$.amount`"):
        assert expected in reasons
    assert {f["detector"] for f in flags} == {"trial_cycling", "login_frequency"}


def test_flags_pass_the_contract_check_and_ids_repeat_across_runs(tmp_path):
    source = write_input(tmp_path / "events.jsonl", abusive_events())
    first = replay(tmp_path, source, name="one.jsonl")
    second = replay(tmp_path, source, name="two.jsonl")
    report = contract_check(first, second)
    assert "0 contract problems" in report


def test_gzip_and_stdin_inputs_give_the_same_flags(tmp_path):
    plain = write_input(tmp_path / "events.jsonl", abusive_events())
    packed = write_input(tmp_path / "events.jsonl.gz", abusive_events())
    expected = {f["flag_id"] for f in read_jsonl(replay(tmp_path, plain, name="a.jsonl"))}
    assert {f["flag_id"] for f in read_jsonl(replay(tmp_path, packed, name="b.jsonl"))} == expected
    output = tmp_path / "c.jsonl"
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "replay", "--input", "-", "--output", str(output)],
        input=plain.read_bytes(), capture_output=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert {f["flag_id"] for f in read_jsonl(output)} == expected


def test_cross_account_disorder_within_minutes_changes_nothing(tmp_path):
    events = abusive_events()
    ordered = write_input(tmp_path / "ordered.jsonl", events, invalid=[])
    rng = random.Random(3)
    jittered = sorted(events, key=lambda e: (e.ts.timestamp() + rng.uniform(0, 120)))
    # keep each account's own events in order, as the contract promises
    per_account = {}
    for event in events:
        per_account.setdefault(event.account_id, []).append(event)
    jittered = [per_account[e.account_id].pop(0) for e in jittered]
    shuffled = write_input(tmp_path / "shuffled.jsonl", jittered, invalid=[])
    assert jittered != events
    first = {f["flag_id"] for f in read_jsonl(replay(tmp_path, ordered, name="o.jsonl"))}
    second = {f["flag_id"] for f in read_jsonl(replay(tmp_path, shuffled, name="s.jsonl"))}
    assert first == second and first


def test_redelivered_events_do_not_flag_twice(tmp_path):
    events = abusive_events()
    source = write_input(tmp_path / "events.jsonl", events + events[:40], invalid=[])
    baseline = write_input(tmp_path / "once.jsonl", events, invalid=[])
    twice = read_jsonl(replay(tmp_path, source, name="t.jsonl"))
    once = read_jsonl(replay(tmp_path, baseline, name="o.jsonl"))
    assert sorted(f["flag_id"] for f in twice) == sorted(f["flag_id"] for f in once)


def test_replay_into_chdb_counts_match_and_reruns_are_harmless(tmp_path):
    import clickhouse_connect

    source = write_input(tmp_path / "events.jsonl", abusive_events())
    dsn = f"chdb://{tmp_path / 'flags.chdb'}"
    flags = read_jsonl(replay(tmp_path, source, "--clickhouse", dsn))
    replay(tmp_path, source, "--clickhouse", dsn, name="again.jsonl")  # re-delivery
    client = clickhouse_connect.get_client(dsn=dsn)
    try:
        count = client.command("SELECT count() FROM abuse.flags FINAL")
        unique = client.command("SELECT count() = uniqExact(flag_id) FROM abuse.flags FINAL")
        dead = client.command("SELECT count() FROM abuse.dead_letters FINAL")
        reasons = client.query("SELECT reasons FROM abuse.flags FINAL WHERE detector = "
                               "'trial_cycling' LIMIT 1").result_rows[0][0]
    finally:
        client.close()
    assert count == len(flags) > 0
    assert unique == 1
    assert dead == len(INVALID)
    assert any("device dev-ring" in reason for reason in reasons)


def test_unreadable_input_exits_non_zero_with_a_clear_message(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "replay", "--input", str(tmp_path / "nope.jsonl"),
         "--output", str(tmp_path / "f.jsonl")], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 2
    assert "does not exist" in result.stderr and "Traceback" not in result.stderr
    fake = tmp_path / "fake.jsonl.gz"
    fake.write_bytes(b"not gzip at all")
    assert main(["replay", "--input", str(fake), "--output", str(tmp_path / "g.jsonl")]) == 2


def test_detector_settings_from_a_file_change_what_is_flagged(tmp_path):
    source = write_input(tmp_path / "events.jsonl", abusive_events(), invalid=[])
    strict = tmp_path / "strict.json"
    strict.write_text(json.dumps({"login_frequency": {"stuffing_min_accounts": 50}}))
    default = read_jsonl(replay(tmp_path, source, name="d.jsonl"))
    tuned = read_jsonl(replay(tmp_path, source, "--settings", str(strict), name="t.jsonl"))
    assert any(f["detector"] == "login_frequency" for f in default)
    assert not any(f["detector"] == "login_frequency" for f in tuned)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"login_frequency": {"no_such_setting": 1}}))
    out = tmp_path / "x.jsonl"
    args = ["replay", "--input", str(source), "--output", str(out), "--settings", str(bad)]
    assert main(args) == 2
