"""Analysts' verdicts: recorded beside the flags in chdb, the latest per flag wins, and the
report turns them into each detector's precision."""

from __future__ import annotations

import clickhouse_connect

from pipeline.cli import main
from tests.pipeline.test_replay import abusive_events, read_jsonl, replay, write_input


def test_verdicts_are_recorded_replaced_and_reported(tmp_path, capsys):
    source = write_input(tmp_path / "events.jsonl", abusive_events(), invalid=[])
    dsn = f"chdb://{tmp_path / 'flags.chdb'}"
    flags = read_jsonl(replay(tmp_path, source, "--clickhouse", dsn))
    ring = [f for f in flags if f["detector"] == "trial_cycling"]
    stuffing = [f for f in flags if f["detector"] == "login_frequency"]
    assert len(ring) >= 2 and stuffing

    def verdict(flag, value, note=""):
        return main(["verdict", "--clickhouse", dsn, "--flag-id", flag["flag_id"],
                     "--verdict", value, "--analyst", "ana", "--note", note])

    assert verdict(ring[0], "benign", "a family") == 0
    assert verdict(ring[0], "abuse", "no: same card later") == 0  # the latest wins
    assert verdict(ring[1], "benign") == 0
    assert verdict(stuffing[0], "abuse") == 0
    assert f"abuse: flag {ring[0]['flag_id']} (trial_cycling, account" in capsys.readouterr().err

    client = clickhouse_connect.get_client(dsn=dsn)
    try:
        rows = client.query("SELECT flag_id, verdict, note FROM abuse.verdicts FINAL "
                            "ORDER BY flag_id").result_rows
    finally:
        client.close()
    assert sorted(rows) == sorted([(ring[0]["flag_id"], "abuse", "no: same card later"),
                                   (ring[1]["flag_id"], "benign", ""),
                                   (stuffing[0]["flag_id"], "abuse", "")])

    assert main(["report", "--clickhouse", dsn]) == 0
    report = capsys.readouterr().out
    section = report.split("== analyst verdicts")[1].split("==")[0]
    lines = {line.split()[0]: line.split()[1:] for line in section.splitlines()[3:] if line}
    assert lines["trial_cycling"] == ["1", "1", "0.5"]
    assert lines["login_frequency"] == ["1", "0", "1.0"]


def test_a_verdict_on_an_unknown_flag_is_a_clear_error(tmp_path, capsys):
    source = write_input(tmp_path / "events.jsonl", abusive_events(), invalid=[])
    dsn = f"chdb://{tmp_path / 'flags.chdb'}"
    replay(tmp_path, source, "--clickhouse", dsn)
    assert main(["verdict", "--clickhouse", dsn, "--flag-id", "nope", "--verdict", "abuse",
                 "--analyst", "ana"]) == 2
    assert "no flag 'nope' in abuse.flags" in capsys.readouterr().err
