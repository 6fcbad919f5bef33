"""``stack up --monitoring``'s Prometheus, a private one per test: it loads ops/prometheus/rules.yml
and scrapes a live consumer's metrics endpoint, whose counters are there from the start."""

from __future__ import annotations

import time

import pytest
import requests
import yaml

from devtools.stack.prometheus import RULES, PrometheusService, scrape_config
from feedstore.contract.rules import DLQ_REASONS
from ingestion.metrics import IngestMetrics
from tests.conftest import free_port


def _query(url: str, expr: str) -> list[dict]:
    body = requests.get(f"{url}/api/v1/query", params={"query": expr}, timeout=10).json()
    assert body["status"] == "success", body
    return body["data"]["result"]


def _until(probe, what: str, timeout: float = 90):
    deadline = time.monotonic() + timeout
    while not (value := probe()):
        assert time.monotonic() < deadline, f"Prometheus never showed {what}"
        time.sleep(1)
    return value


@pytest.fixture()
def prometheus(stack, tmp_path):
    ingest_port, idle_port = free_port(), free_port()
    metrics = IngestMetrics()
    metrics.serve(ingest_port)
    settings = stack.replace(stack={"dir": tmp_path, "prometheus_port": free_port(),
                                    "scrape_ingest": f"127.0.0.1:{ingest_port}",
                                    "scrape_serve": f"127.0.0.1:{idle_port}", "scrape_pipeline": ""})
    service = PrometheusService(settings)
    assert service.up() is True
    try:
        yield service, metrics
    finally:
        service.stop()


def test_scrapes_the_consumer_and_loads_every_rule(prometheus):
    service, metrics = prometheus
    metrics.validation_failures.labels("bad_json").inc(3)
    series = _until(lambda: _query(service.url, "feedstore_ingest_validation_failures_total"), "the consumer")
    by_reason = {s["metric"]["reason"]: float(s["value"][1]) for s in series}
    assert set(by_reason) == {str(r) for r in DLQ_REASONS}  # every reason, at 0 before its first failure
    assert by_reason["bad_json"] == 3 and by_reason["too_old"] == 0
    assert {s["metric"]["job"] for s in series} == {"feedstore-ingest"}

    rules = requests.get(f"{service.url}/api/v1/rules", timeout=10).json()["data"]["groups"]
    loaded = {r["name"] for g in rules for r in g["rules"]}
    wanted = {r.get("alert") or r["record"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]}
    assert loaded == wanted
    health = {t["labels"]["job"]: t["health"] for t in
              requests.get(f"{service.url}/api/v1/targets", timeout=10).json()["data"]["activeTargets"]}
    assert health["feedstore-ingest"] == "up"
    _until(lambda: requests.get(f"{service.url}/api/v1/targets", timeout=10).json()["data"]["activeTargets"]
           and _query(service.url, 'up{job="feedstore-serve"} == 0'), "the missing feature server as down")
    assert requests.get(f"{service.url}/classic/alerts", timeout=10).status_code == 200


@pytest.mark.pure
def test_config_has_a_job_per_component_with_the_settings_targets():
    from feedstore.settings import Settings

    s = Settings.defaults().replace(stack={"scrape_ingest": "a:1, b:2", "scrape_pipeline": ""})
    config = scrape_config(s)
    jobs = {j["job_name"]: j["static_configs"][0]["targets"] for j in config["scrape_configs"]}
    assert jobs == {"feedstore-ingest": ["a:1", "b:2"], "feedstore-serve": [s.stack.scrape_serve],
                    "feedstore-pipeline": []}
    assert config["rule_files"] == [str(RULES)]
