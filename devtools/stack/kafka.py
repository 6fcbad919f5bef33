"""Apache Kafka 4.1 in KRaft mode, single node, from Maven Central jars cached per version."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from confluent_kafka import KafkaException
from confluent_kafka.admin import NewTopic

from devtools.stack.base import Service, StackError, port_open, spawn, terminate
from devtools.stack.tools import require
from feedstore.kafka import admin_client

LOG4J_VERSION = "2.24.3"
MAX_MESSAGE_BYTES = 16 * 1024 * 1024

POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>feedstore</groupId><artifactId>kafka-runtime</artifactId><version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId>
      <version>{kafka}</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId>
      <version>{log4j}</version></dependency>
  </dependencies>
</project>
"""

LOG4J2 = """status = warn
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.stdout.ref = STDOUT
logger.server.name = kafka.server.KafkaRaftServer
logger.server.level = INFO
"""


class KafkaService(Service):
    name = "kafka"

    @property
    def lib_dir(self) -> Path:
        return self.settings.stack.cache_dir / f"kafka-{self.settings.stack.kafka_version}" / "lib"

    @property
    def host(self) -> str:
        return self.settings.kafka.bootstrap.split(",")[0].rsplit(":", 1)[0]

    def install(self) -> None:
        require("java")
        marker = self.lib_dir / ".complete"
        if marker.exists():
            return
        build = self.lib_dir.parent / "pom"
        build.mkdir(parents=True, exist_ok=True)
        (build / "pom.xml").write_text(POM.format(kafka=self.settings.stack.kafka_version, log4j=LOG4J_VERSION))
        shutil.rmtree(self.lib_dir, ignore_errors=True)
        result = subprocess.run(
            [require("mvn"), "-q", "-B", "dependency:copy-dependencies", "-DincludeScope=runtime",
             f"-DoutputDirectory={self.lib_dir}"],
            cwd=build, capture_output=True, text=True,
        )
        if result.returncode != 0:
            raise StackError(f"kafka: fetching jars from Maven Central failed: {result.stdout.strip()[-800:]}")
        marker.touch()

    def _properties(self) -> str:
        port, cport = self.settings.kafka.port, self.settings.stack.kafka_controller_port
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{cport}",
            "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{cport}",
            "advertised.listeners": f"PLAINTEXT://{self.host}:{port}",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": str(self.dir / "data"),
            "num.partitions": "1",
            "auto.create.topics.enable": "false",
            "offsets.topic.replication.factor": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            "message.max.bytes": str(MAX_MESSAGE_BYTES),
            "replica.fetch.max.bytes": str(MAX_MESSAGE_BYTES),
            "log.retention.hours": "168",
        }
        return "".join(f"{k}={v}\n" for k, v in props.items())

    def start(self) -> None:
        config = self.dir / "server.properties"
        config.write_text(self._properties())
        (self.dir / "log4j2.properties").write_text(LOG4J2)
        classpath = f"{self.lib_dir}/*"
        if not (self.dir / "data" / "meta.properties").exists():
            result = subprocess.run(
                [require("java"), "-cp", classpath, "kafka.tools.StorageTool", "format",
                 "-t", "feedstore-local-cluster0", "-c", str(config)],
                capture_output=True, text=True,
            )
            if result.returncode != 0:
                raise StackError(f"kafka storage format failed: {result.stderr.strip()[-500:]}")
        spawn(
            [require("java"), self.settings.stack.kafka_heap, "-Xms256m", "-XX:+UseG1GC",
             f"-Dlog4j2.configurationFile={self.dir / 'log4j2.properties'}",
             "-cp", classpath, "kafka.Kafka", str(config)],
            self.log_file, self.pid_file,
        )

    def ready(self) -> bool:
        if not port_open(self.host, self.settings.kafka.port):
            return False
        try:
            metadata = admin_client(self.settings.kafka.bootstrap).list_topics(timeout=2)
            return bool(metadata.brokers)
        except KafkaException:
            return False

    def provision(self) -> None:
        """Create the activity topic (keyed by user, several partitions), its dead-letter topic and
        the catalog and profile topics (keyed by item / user id)."""
        s = self.settings
        wanted = {
            s.kafka.topic_activity: s.kafka.topic_partitions,
            s.kafka.topic_dlq: 1,
            s.kafka.topic_items: s.kafka.topic_partitions,
            s.kafka.topic_users: s.kafka.topic_partitions,
            s.kafka.topic_retry: s.kafka.topic_partitions,
        }
        ensure_topics(s.kafka.bootstrap, wanted, create_time=(s.kafka.topic_retry,))

    def stop(self) -> None:
        terminate(self.pid_file, grace=60)

    def endpoint(self) -> str:
        return self.settings.kafka.bootstrap


def ensure_topics(bootstrap: str, partitions_by_topic: dict[str, int], create_time: tuple[str, ...] = ()) -> None:
    """Create missing topics; existing ones are left as they are. ``create_time`` topics keep the
    producer's timestamp (the retry topic carries each event's first arrival)."""
    admin = admin_client(bootstrap)
    existing = set(admin.list_topics(timeout=10).topics)
    new = [
        NewTopic(name, num_partitions=n, replication_factor=1,
                 # The broker stamps each record on arrival: the consumer judges an event's age by it.
                 config={"max.message.bytes": str(MAX_MESSAGE_BYTES),
                         "message.timestamp.type": "CreateTime" if name in create_time else "LogAppendTime"})
        for name, n in partitions_by_topic.items() if name not in existing
    ]
    if not new:
        return
    for name, future in admin.create_topics(new, operation_timeout=30).items():
        try:
            future.result()
        except KafkaException as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise StackError(f"kafka: creating topic {name} failed: {exc}") from exc
