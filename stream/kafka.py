"""Kafka client plumbing: transport-security configs, explicit topic creation, consumers.

One place builds client configuration from :class:`Settings` so the worker's aiokafka clients
and every kafka-python client (admin, producer, subscriber) get the same TLS / SASL settings.
"""

from __future__ import annotations

import ssl
from typing import Any

from stream.settings import Settings

__all__ = ["kafka_python_config", "aiokafka_config", "partition_for", "ensure_topics", "assigned_consumer"]


def kafka_python_config(settings: Settings, bootstrap: str) -> dict[str, Any]:
    """Keyword arguments for kafka-python's clients (``KafkaProducer``, ``KafkaConsumer``, admin)."""
    cfg: dict[str, Any] = {"bootstrap_servers": bootstrap, "security_protocol": settings.security_protocol}
    if settings.security_protocol in ("SSL", "SASL_SSL"):
        cfg.update(ssl_cafile=_s(settings.ssl_cafile), ssl_certfile=_s(settings.ssl_certfile),
                   ssl_keyfile=_s(settings.ssl_keyfile), ssl_check_hostname=True)
    if settings.security_protocol.startswith("SASL"):
        cfg.update(sasl_mechanism=settings.sasl_mechanism or "PLAIN", sasl_plain_username=settings.sasl_username,
                   sasl_plain_password=settings.sasl_password.get_secret_value() if settings.sasl_password else None)
    return {k: v for k, v in cfg.items() if v is not None}


def aiokafka_config(settings: Settings, bootstrap: str) -> dict[str, Any]:
    """Keyword arguments for aiokafka's clients (the worker's consumers and producer)."""
    proto = settings.security_protocol
    cfg: dict[str, Any] = {"bootstrap_servers": bootstrap, "security_protocol": proto}
    if proto in ("SSL", "SASL_SSL"):
        context = ssl.create_default_context(purpose=ssl.Purpose.SERVER_AUTH, cafile=_s(settings.ssl_cafile))
        if settings.ssl_certfile:
            context.load_cert_chain(str(settings.ssl_certfile), _s(settings.ssl_keyfile))
        cfg["ssl_context"] = context
    if proto.startswith("SASL"):
        cfg.update(sasl_mechanism=settings.sasl_mechanism or "PLAIN", sasl_plain_username=settings.sasl_username,
                   sasl_plain_password=settings.sasl_password.get_secret_value() if settings.sasl_password else "")
    return cfg


def partition_for(key: bytes, partitions: int) -> int:
    """Kafka's default partition for a keyed record (murmur2, as the Java client and kafka-python)."""
    from kafka.partitioner.default import murmur2  # noqa: PLC0415

    return (murmur2(key) & 0x7FFFFFFF) % partitions


def ensure_topics(settings: Settings, bootstrap: str) -> dict[str, int]:
    """Create every service topic that does not exist yet (Tansu would otherwise auto-create 4 partitions)."""
    from kafka.admin import KafkaAdminClient, NewTopic  # noqa: PLC0415
    from kafka.errors import TopicAlreadyExistsError  # noqa: PLC0415

    wanted = settings.topics()
    admin = KafkaAdminClient(**kafka_python_config(settings, bootstrap), client_id=f"{settings.app_id}-admin")
    try:
        existing = set(admin.list_topics())
        missing = [NewTopic(name, n, settings.replication) for name, n in wanted.items() if name not in existing]
        if missing:
            try:
                admin.create_topics(missing)
            except TopicAlreadyExistsError:  # another worker won the race
                pass
        return wanted
    finally:
        admin.close()


def assigned_consumer(settings: Settings, bootstrap: str, topics: list[str], **extra: Any) -> Any:
    """A kafka-python consumer *assigned* every partition of ``topics`` from the beginning.

    No consumer group: subscribers and tools start reading at once instead of waiting for a
    group join.
    """
    from kafka import KafkaConsumer, TopicPartition  # noqa: PLC0415

    consumer = KafkaConsumer(**kafka_python_config(settings, bootstrap), enable_auto_commit=False,
                             group_id=None, **extra)
    parts = []
    for t in topics:
        ps = consumer.partitions_for_topic(t) or {0}
        parts += [TopicPartition(t, p) for p in sorted(ps)]
    consumer.assign(parts)
    consumer.seek_to_beginning(*parts)
    return consumer


def _s(p: object) -> str | None:
    return None if p is None else str(p)
