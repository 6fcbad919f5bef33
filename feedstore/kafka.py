"""Kafka clients every component builds the same way."""

from __future__ import annotations

from confluent_kafka.admin import AdminClient


def admin_client(bootstrap: str) -> AdminClient:
    """librdkafka logs every refused connection; the caller reports failures itself."""
    return AdminClient({"bootstrap.servers": bootstrap, "socket.timeout.ms": 3000, "log_level": 0})
