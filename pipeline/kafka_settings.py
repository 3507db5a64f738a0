"""Kafka settings from command-line flags and environment variables.

| setting | flag | environment |
|---|---|---|
| bootstrap servers | ``--bootstrap`` | ``ABUSE_BOOTSTRAP`` |
| topic prefix | ``--topic-prefix`` | ``ABUSE_TOPIC_PREFIX`` (e.g. ``acme.``) |
| consumer group | ``--group-id`` | ``ABUSE_GROUP_ID`` (default ``abuse-pipeline``) |
| replication of topics it creates | ``--replication-factor`` | ``ABUSE_REPLICATION_FACTOR`` |
| security protocol | | ``KAFKA_SECURITY_PROTOCOL`` (PLAINTEXT, SSL, SASL_SSL, ...) |
| SASL | | ``KAFKA_SASL_MECHANISM``, ``KAFKA_SASL_USERNAME``, ``KAFKA_SASL_PASSWORD`` |
| TLS | | ``KAFKA_SSL_CAFILE``, ``KAFKA_SSL_CERTFILE``, ``KAFKA_SSL_KEYFILE`` |

>>> settings = KafkaSettings(bootstrap="127.0.0.1:9092", topic_prefix="acme.")
>>> settings.topic("events.login"), settings.event_topics()[0]
('acme.events.login', 'acme.events.signup')
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from schemas.events import EVENT_TYPES

__all__ = ["DEAD_LETTER_TOPIC", "FLAGS_TOPIC", "KafkaSettings", "env_int"]

FLAGS_TOPIC = "abuse.flags"
DEAD_LETTER_TOPIC = "events.deadletter"


@dataclass(frozen=True)
class KafkaSettings:
    bootstrap: str
    topic_prefix: str = ""
    group_id: str = "abuse-pipeline"
    security: Mapping[str, Any] = field(default_factory=dict)
    # of the topics we create; -1: the broker's default.replication.factor (Kafka >= 2.4)
    replication_factor: int = -1

    def __post_init__(self) -> None:
        if self.replication_factor == 0 or self.replication_factor < -1:
            raise ValueError(f"replication factor {self.replication_factor}: use 1 or more, "
                             "or -1 for the broker's default.replication.factor")

    @classmethod
    def from_env(cls, *, bootstrap: str | None = None, topic_prefix: str | None = None,
                 group_id: str | None = None, replication_factor: int | None = None,
                 env: Mapping[str, str] = os.environ) -> KafkaSettings:
        bootstrap = bootstrap or env.get("ABUSE_BOOTSTRAP")
        if not bootstrap:
            raise ValueError("no Kafka bootstrap servers: pass --bootstrap or set ABUSE_BOOTSTRAP")
        security = {
            name: env[variable]
            for name, variable in (
                ("security_protocol", "KAFKA_SECURITY_PROTOCOL"),
                ("sasl_mechanism", "KAFKA_SASL_MECHANISM"),
                ("sasl_plain_username", "KAFKA_SASL_USERNAME"),
                ("sasl_plain_password", "KAFKA_SASL_PASSWORD"),
                ("ssl_cafile", "KAFKA_SSL_CAFILE"),
                ("ssl_certfile", "KAFKA_SSL_CERTFILE"),
                ("ssl_keyfile", "KAFKA_SSL_KEYFILE"),
            )
            if env.get(variable)
        }
        return cls(
            bootstrap=bootstrap,
            topic_prefix=topic_prefix if topic_prefix is not None else env.get(
                "ABUSE_TOPIC_PREFIX", ""),
            group_id=group_id or env.get("ABUSE_GROUP_ID", "abuse-pipeline"),
            security=security,
            replication_factor=replication_factor if replication_factor is not None else
            env_int(env, "ABUSE_REPLICATION_FACTOR", -1),
        )

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}{name}"

    def event_topics(self) -> list[str]:
        return [self.topic(f"events.{kind}") for kind in EVENT_TYPES]

    def aiokafka_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for aiokafka clients (TLS files become an SSL context)."""
        kwargs = {k: v for k, v in self.security.items() if not k.startswith("ssl_")}
        files = {k: v for k, v in self.security.items() if k.startswith("ssl_")}
        if files:
            from aiokafka.helpers import create_ssl_context

            kwargs["ssl_context"] = create_ssl_context(
                cafile=files.get("ssl_cafile"), certfile=files.get("ssl_certfile"),
                keyfile=files.get("ssl_keyfile"))
        return {"bootstrap_servers": self.bootstrap, **kwargs}

    def faust_settings(self) -> dict[str, Any]:
        """Broker and credentials settings for a faust-streaming app (same security)."""
        import faust

        hosts = [host.strip() for host in self.bootstrap.split(",") if host.strip()]
        settings: dict[str, Any] = {"broker": ";".join(f"kafka://{host}" for host in hosts)}
        protocol = self.security.get("security_protocol", "PLAINTEXT").upper()
        context = self.aiokafka_kwargs().get("ssl_context")
        if protocol in ("SSL", "SASL_SSL") and context is None:
            import ssl

            context = ssl.create_default_context()  # the system's CAs, as aiokafka's default
        if protocol.startswith("SASL"):
            settings["broker_credentials"] = faust.SASLCredentials(
                username=self.security.get("sasl_plain_username"),
                password=self.security.get("sasl_plain_password"),
                mechanism=self.security.get("sasl_mechanism", "PLAIN"),
                ssl_context=context if protocol == "SASL_SSL" else None)
        elif protocol == "SSL":
            settings["broker_credentials"] = faust.SSLCredentials(context)
        return settings

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for kafka-python clients."""
        return {"bootstrap_servers": self.bootstrap.split(","), **self.security}


def env_int(env: Mapping[str, str], variable: str, default: int) -> int:
    """A whole number from the environment, or a clear error naming the variable."""
    value = env.get(variable, "").strip()
    if not value:
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{variable}={value!r} is not a whole number") from None
