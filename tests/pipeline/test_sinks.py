"""The restriction hook sink against a real HTTP endpoint on 127.0.0.1."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from pipeline.cli import main
from pipeline.sinks import RestrictionHookSink, SinkError
from schemas.flags import Flag
from tests.pipeline.endpoint import Endpoint
from tests.pipeline.test_replay import abusive_events, read_jsonl, write_input


@pytest.fixture
def endpoint():
    server = Endpoint()
    yield server
    server.close()


def flag(account: str, severity: str, mode: str = "enforce") -> Flag:
    return Flag(flag_id=f"f-{account}", account_id=account, detector="login_frequency",
                score=0.9, severity=severity, ts="2026-11-01T00:00:00.000Z",
                detected_at="2026-11-01T00:00:01.000Z", reasons=("why",), evidence={},
                related_accounts=(), mode=mode)


def test_the_hook_gets_enforced_flags_at_its_severity_signed(endpoint):
    with RestrictionHookSink(endpoint.url, min_severity="medium", secret="s3cret") as hook:
        for f in (flag("a", "high"), flag("b", "medium"), flag("c", "low"),
                  flag("d", "high", mode="shadow")):
            hook.add(f)
    assert [f["account_id"] for f in endpoint.flags()] == ["a", "b"]
    (headers, body), = endpoint.requests
    expected = hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    assert headers["X-Abuse-Pipeline-Signature"] == f"sha256={expected}"
    assert headers["Content-Type"] == "application/json"


def test_a_throttled_or_failing_endpoint_is_retried():
    server = Endpoint(statuses=[503, 429])
    try:
        with RestrictionHookSink(server.url, backoff=0.01) as hook:
            hook.add(flag("a", "high"))
        assert len(server.requests) == 3
        assert [f["account_id"] for f in server.flags()] == ["a"] * 3
    finally:
        server.close()


def test_an_endpoint_that_refuses_raises_with_what_was_not_delivered():
    server = Endpoint(statuses=[400])
    try:
        hook = RestrictionHookSink(server.url)
        hook.setup()
        hook.add(flag("a", "high"))
        with pytest.raises(SinkError, match=r"answered HTTP 400 \(1 flags not delivered\)"):
            hook.flush()
    finally:
        server.close()
    unreachable = RestrictionHookSink(server.url, retries=1, backoff=0.01)
    unreachable.setup()
    unreachable.add(flag("a", "high"))
    with pytest.raises(SinkError, match="unreachable"):
        unreachable.flush()


def test_bad_settings_are_refused_up_front():
    with pytest.raises(ValueError, match="min_severity"):
        RestrictionHookSink("http://127.0.0.1:1/", min_severity="urgent")
    with pytest.raises(ValueError, match="http"):
        RestrictionHookSink("ftp://example.com/")


def test_replay_calls_the_hook_for_high_flags_and_never_for_shadow_ones(tmp_path, endpoint):
    source = write_input(tmp_path / "events.jsonl", abusive_events(), invalid=[])
    output = tmp_path / "flags.jsonl"
    assert main(["replay", "--input", str(source), "--output", str(output), "--no-progress",
                 "--hook", endpoint.url]) == 0
    written = read_jsonl(output)
    high = sorted(f["flag_id"] for f in written if f["severity"] == "high")
    assert high and sorted(f["flag_id"] for f in endpoint.flags()) == high

    shadowed = tmp_path / "shadow.jsonl"
    before = len(endpoint.flags())
    assert main(["replay", "--input", str(source), "--output", str(shadowed), "--no-progress",
                 "--hook", endpoint.url, "--hook-min-severity", "low",
                 "--shadow", "trial_cycling,login_frequency,refund_abuse"]) == 0
    assert read_jsonl(shadowed) and len(endpoint.flags()) == before


def test_replay_ignores_a_hook_url_in_the_environment(tmp_path, endpoint, monkeypatch):
    # restricting accounts from a file of past events is asked for on the command line
    monkeypatch.setenv("ABUSE_HOOK_URL", endpoint.url)
    source = write_input(tmp_path / "events.jsonl", abusive_events(), invalid=[])
    assert main(["replay", "--input", str(source), "--output", str(tmp_path / "f.jsonl"),
                 "--no-progress", "--hook-min-severity", "low"]) == 0
    assert endpoint.requests == []


def test_a_clickhouse_write_that_fails_is_a_sink_error_and_keeps_its_batch():
    """Whatever the driver raises becomes one clear error (replay prints it on one line), and
    the batch stays for the next flush."""
    from pipeline.sinks import ClickHouseFlagSink

    class Refusing:
        def insert(self, table, rows, column_names):
            raise ConnectionError("Connection refused: 127.0.0.1:8123")

    table = ClickHouseFlagSink(client=Refusing())
    table.add(flag("a", "high"))
    with pytest.raises(SinkError, match=r"cannot write 1 rows to ClickHouse abuse\.flags: "
                                        r"Connection refused"):
        table.flush()
    assert [f.account_id for f in table._buffer] == ["a"]
