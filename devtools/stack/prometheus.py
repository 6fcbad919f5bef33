"""Prometheus from Debian's package (``stack up --monitoring``): scrapes the consumer, the
feature server and the pipeline exporter at the ports of ``settings.stack``, evaluates
ops/prometheus/rules.yml, keeps its data in the stack directory. Its own UI shows the graphs and
the alerts (Debian builds the classic UI: http://127.0.0.1:9190/classic/alerts) without
Grafana or Docker."""

from __future__ import annotations

import requests
import yaml

from devtools.stack.base import Service, StackError, spawn, terminate
from devtools.stack.tools import require
from feedstore.settings import PROJECT_ROOT, Settings

RULES = PROJECT_ROOT / "ops" / "prometheus" / "rules.yml"
JOBS = {"feedstore-ingest": "scrape_ingest", "feedstore-serve": "scrape_serve", "feedstore-pipeline": "scrape_pipeline"}


def scrape_config(settings: Settings, rules=RULES) -> dict:
    """The configuration it runs with: one job per component, its targets from the settings."""
    jobs = [{"job_name": job, "static_configs": [{"targets": [t.strip() for t in
                                                              getattr(settings.stack, field).split(",") if t.strip()]}]}
            for job, field in JOBS.items()]
    return {"global": {"scrape_interval": "15s", "evaluation_interval": "30s"},
            "rule_files": [str(rules)], "scrape_configs": jobs}


class PrometheusService(Service):
    name = "prometheus"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.settings.stack.prometheus_port}"

    def install(self) -> None:
        require("prometheus")

    def start(self) -> None:
        config = self.dir / "prometheus.yml"
        config.write_text(yaml.safe_dump(scrape_config(self.settings), sort_keys=False))
        check = require("promtool")
        import subprocess

        out = subprocess.run([check, "check", "config", str(config)], capture_output=True, text=True)
        if out.returncode != 0:
            raise StackError(f"prometheus: {config} is refused: {(out.stdout + out.stderr).strip()}")
        spawn([require("prometheus"), f"--config.file={config}", f"--storage.tsdb.path={self.dir / 'data'}",
               f"--web.listen-address=127.0.0.1:{self.settings.stack.prometheus_port}",
               "--storage.tsdb.retention.time=15d", "--web.enable-lifecycle"],
              self.log_file, self.pid_file, cwd=self.dir)

    def ready(self) -> bool:
        try:
            return requests.get(f"{self.url}/-/ready", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def stop(self) -> None:
        terminate(self.pid_file, grace=30)

    def endpoint(self) -> str:
        return self.url
