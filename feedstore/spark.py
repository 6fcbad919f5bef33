"""The Spark session of the offline side, in local mode, reading the lake over ``s3a://``.

Spark reads S3 through Hadoop's S3A filesystem, which pyspark does not ship: ``hadoop-aws`` of
the very Hadoop version bundled in pyspark's jars, and the AWS SDK it depends on, are resolved
from Maven Central by Spark's own resolver (``spark.jars.packages``) into ``FEED_SPARK_JARS_DIR``
the first time, then put on the driver's class path. Not ``spark.jars.packages`` on every
session: a local executor copies each listed jar (the SDK's is 690 MB) at every start.
The endpoint and credentials are the settings' S3 group, so a component reads with its own
identity, as DuckDB does (``feedstore.s3``).
"""

from __future__ import annotations

import fcntl
import logging
import re
import shutil
import threading
from pathlib import Path

from feedstore.contract import lake
from feedstore.settings import Settings, get_settings

_lock = threading.Lock()


def hadoop_version() -> str:
    """The Hadoop pyspark bundles, read from its ``hadoop-client-api-<version>.jar``."""
    import pyspark

    jars = Path(pyspark.__file__).parent / "jars"
    for jar in sorted(jars.glob("hadoop-client-api-*.jar")):
        match = re.fullmatch(r"hadoop-client-api-(.+)\.jar", jar.name)
        if match:
            return match.group(1)
    raise RuntimeError(f"no hadoop-client-api jar under {jars}: set FEED_SPARK_HADOOP_AWS_VERSION")


def s3a_jars(settings: Settings | None = None) -> list[Path]:
    """hadoop-aws and its dependencies, resolved once per version (a file lock keeps concurrent
    processes from resolving the same directory twice)."""
    sp = (settings or get_settings()).spark
    version = sp.hadoop_aws_version or hadoop_version()
    ivy = sp.jars_dir / f"hadoop-aws-{version}"
    wanted = ivy / "jars" / f"org.apache.hadoop_hadoop-aws-{version}.jar"
    ivy.mkdir(parents=True, exist_ok=True)
    with open(ivy / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not wanted.exists():
            _resolve(f"org.apache.hadoop:hadoop-aws:{version}", ivy)
        if not wanted.exists():
            raise RuntimeError(f"resolving hadoop-aws {version} into {ivy} left no {wanted.name}")
    return sorted((ivy / "jars").glob("*.jar"))


def _resolve(coordinate: str, ivy: Path) -> None:
    """Spark's submit step resolves and retrieves ``--packages`` before it opens its gateway; the
    gateway is closed at once, nothing else runs."""
    from pyspark import SparkConf
    from pyspark.java_gateway import launch_gateway

    gateway = launch_gateway(SparkConf().set("spark.jars.packages", coordinate).set("spark.jars.ivy", str(ivy)))
    gateway.shutdown()
    proc = getattr(gateway, "proc", None)
    if proc is not None:
        proc.stdin.close()
        proc.wait(timeout=60)
    shutil.rmtree(ivy / "cache", ignore_errors=True)  # the resolver's copy; the jars are in jars/


def s3a_uri(key: str, settings: Settings | None = None) -> str:
    s = settings or get_settings()
    return f"s3a://{s.s3.bucket}/{key.lstrip('/')}"


def feature_glob(view: str, settings: Settings | None = None) -> str:
    """Every day of a view's table, as Spark reads it (the same objects as the DuckDB source's glob)."""
    return s3a_uri(lake.feature_glob(view), settings)


def s3a_conf(settings: Settings | None = None) -> dict[str, str]:
    """Hadoop's S3A options for the settings' endpoint; the credentials are per bucket, so a process
    whose settings change bucket (a test sandbox) keeps each bucket's own identity."""
    s = settings or get_settings()
    bucket = f"fs.s3a.bucket.{s.s3.bucket}"
    return {
        "fs.s3a.endpoint": s.s3.endpoint,
        "fs.s3a.endpoint.region": s.s3.region,
        "fs.s3a.path.style.access": "true",
        "fs.s3a.connection.ssl.enabled": str(s.s3.use_ssl).lower(),
        "fs.s3a.aws.credentials.provider": "org.apache.hadoop.fs.s3a.SimpleAWSCredentialsProvider",
        f"{bucket}.access.key": s.s3.access_key_id,
        f"{bucket}.secret.key": s.s3.secret_access_key,
    }


def spark_conf(settings: Settings | None = None) -> dict[str, str]:
    """Everything the session is started with; Feast's ``SparkOfflineStoreConfig.spark_conf`` takes
    the same dict, so a session Feast starts is this one."""
    s = settings or get_settings()
    sp = s.spark
    return {
        "spark.master": sp.master,
        "spark.app.name": f"feedstore-{s.component}",
        "spark.driver.memory": sp.driver_memory,
        "spark.driver.extraClassPath": ":".join(str(j) for j in s3a_jars(s)),
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.shuffle.partitions": str(sp.shuffle_partitions),
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.driver.host": "127.0.0.1",
        "spark.driver.bindAddress": "127.0.0.1",
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        **{f"spark.hadoop.{k}": v for k, v in s3a_conf(s).items()},
    }


def session(settings: Settings | None = None):
    """The process's Spark session (started on first call), able to read ``settings``' bucket."""
    from pyspark.sql import SparkSession

    s = settings or get_settings()
    with _lock:
        spark = SparkSession.getActiveSession()
        if spark is None:
            builder = SparkSession.builder
            for key, value in spark_conf(s).items():
                builder = builder.config(key, value)
            spark = builder.getOrCreate()
            spark.sparkContext.setLogLevel("ERROR")
            logging.getLogger("py4j").setLevel(logging.WARNING)  # a line per gateway connection otherwise
        configure(spark, s)
    return spark


def configure(spark, settings: Settings | None = None) -> None:
    """Points a running session at ``settings``' endpoint and bucket credentials (a session started
    for another bucket, or by Feast, reads this one too)."""
    hadoop = spark.sparkContext._jsc.hadoopConfiguration()
    for key, value in s3a_conf(settings).items():
        hadoop.set(key, value)
