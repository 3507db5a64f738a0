"""Kafka settings from flags and environment variables."""

import pytest

from pipeline.kafka_settings import KafkaSettings


def test_replication_factor_defaults_to_the_brokers_default():
    assert KafkaSettings.from_env(bootstrap="b:9092", env={}).replication_factor == -1


def test_replication_factor_from_the_environment_and_a_flag_that_wins():
    env = {"ABUSE_REPLICATION_FACTOR": "3"}
    assert KafkaSettings.from_env(bootstrap="b:9092", env=env).replication_factor == 3
    assert KafkaSettings.from_env(bootstrap="b:9092", replication_factor=2,
                                  env=env).replication_factor == 2


@pytest.mark.parametrize(("value", "message"), [
    ("three", "ABUSE_REPLICATION_FACTOR='three' is not a whole number"),
    ("0", "replication factor 0: use 1 or more"),
    ("-2", "replication factor -2: use 1 or more"),
])
def test_a_bad_replication_factor_is_a_clear_error(value, message):
    with pytest.raises(ValueError, match=message):
        KafkaSettings.from_env(bootstrap="b:9092", env={"ABUSE_REPLICATION_FACTOR": value})


def test_a_broker_that_cannot_be_reached_is_a_clear_error_for_produce_and_the_worker():
    # both create their topics through ensure_topics: one place says what went wrong
    from pipeline.produce import ensure_topics

    settings = KafkaSettings(bootstrap="127.0.0.1:1", security={"bootstrap_timeout_ms": 500})
    with pytest.raises(ValueError, match=r"^cannot reach Kafka at 127\.0\.0\.1:1: "):
        ensure_topics(settings, ["events.login"], 1)


@pytest.mark.parametrize("stages", ["ingest,dedupe", ","])
def test_the_worker_refuses_unknown_stages_before_connecting(stages):
    from pipeline.cli import main

    with pytest.raises(SystemExit, match="--stages / ABUSE_STAGES takes ingest, detect and "
                                         "shard"):
        main(["worker", "--bootstrap", "127.0.0.1:1", "--stages", stages])


@pytest.mark.parametrize(("options", "message"), [
    (["--stages", "shard"], "give --key-shards 2 or more"),
    (["--key-shards", "0"], "must be 1 or more"),
    (["--key-shards", "2", "--detectors", "trial_cycling"], "key-shards needs one"),
])
def test_the_worker_refuses_key_shards_it_cannot_run_before_connecting(options, message,
                                                                        capsys):
    from pipeline.cli import main

    try:
        code = main(["worker", "--bootstrap", "127.0.0.1:1", *options])
    except SystemExit as stopped:
        code = stopped.code
    assert code != 0
    assert message in str(code) + capsys.readouterr().err


def test_the_faust_app_gets_the_same_brokers_and_security():
    plain = KafkaSettings(bootstrap="a:9092,b:9093").faust_settings()
    assert plain == {"broker": "kafka://a:9092;kafka://b:9093"}
    sasl = KafkaSettings.from_env(bootstrap="a:9092", env={
        "KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "KAFKA_SASL_USERNAME": "svc", "KAFKA_SASL_PASSWORD": "pw"}).faust_settings()
    credentials = sasl["broker_credentials"]
    assert (credentials.protocol.value, credentials.mechanism.value, credentials.username) == (
        "SASL_SSL", "SCRAM-SHA-512", "svc")
    assert credentials.ssl_context is not None
    tls = KafkaSettings(bootstrap="a:9093", security={"security_protocol": "SSL"})
    assert tls.faust_settings()["broker_credentials"].protocol.value == "SSL"
