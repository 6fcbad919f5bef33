"""ops/: the Prometheus rules checked and unit-tested by promtool (each alert fires in one case and
stays quiet in another), and every metric and label the rules and the Grafana dashboard name is one
that feedstore exports."""

from __future__ import annotations

import json
import re
import subprocess

import pytest
import yaml

from devtools.stack.tools import require
from feedstore.settings import PROJECT_ROOT

pytestmark = pytest.mark.pure

OPS = PROJECT_ROOT / "ops"
RULES = OPS / "prometheus" / "rules.yml"
RULES_TEST = OPS / "prometheus" / "rules_test.yml"
DASHBOARD = OPS / "grafana" / "feedstore.json"
# Labels Prometheus adds to every scraped series.
TARGET_LABELS = {"job", "instance"}


def _promtool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([require("promtool"), *args], capture_output=True, text=True, timeout=120, cwd=OPS)


def _rules() -> list[dict]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def test_promtool_checks_the_rules():
    out = _promtool("check", "rules", str(RULES))
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {len(_rules())} rules found" in out.stdout


def test_promtool_unit_tests_pass():
    out = _promtool("test", "rules", str(RULES_TEST))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout


def test_promtool_unit_tests_can_fail(tmp_path):
    """A broken threshold makes the unit tests fail: they do test the rules."""
    broken = tmp_path / "rules.yml"
    broken.write_text(RULES.read_text().replace("feedstore_ingest_store_up == 0", "feedstore_ingest_store_up == 2"))
    test = tmp_path / "rules_test.yml"
    test.write_text(RULES_TEST.read_text())
    out = subprocess.run([require("promtool"), "test", "rules", str(test)], capture_output=True, text=True,
                         timeout=120, cwd=tmp_path)
    assert out.returncode != 0 and "FeedstoreStoreDown" in out.stdout + out.stderr


def test_every_alert_fires_in_one_case_and_stays_quiet_in_another():
    cases = [t for test in yaml.safe_load(RULES_TEST.read_text())["tests"] for t in test["alert_rule_test"]]
    for alert in (r["alert"] for r in _rules() if "alert" in r):
        mine = [c for c in cases if c["alertname"] == alert]
        assert any(c["exp_alerts"] for c in mine), f"{alert}: no case where it fires"
        assert any(not c["exp_alerts"] for c in mine), f"{alert}: no case where it stays quiet"


def _exported() -> dict[str, set[str]]:
    """Every sample name feedstore exports -> its label names."""
    from prometheus_client.metrics import MetricWrapperBase

    from feedstore.feast.serving import ServeMetrics
    from ingestion.metrics import IngestMetrics
    from orchestration import metrics as pipeline

    families: list[tuple[str, str, tuple[str, ...]]] = []
    for owner in (IngestMetrics(), ServeMetrics(["/get-online-features"])):
        for value in vars(owner).values():
            if isinstance(value, MetricWrapperBase):
                families.append((value._name, value._type, tuple(value._labelnames)))

    def unreadable():
        raise RuntimeError("no instance in this test")
    collector = pipeline.PipelineCollector(unreadable)
    families += [(f.name, f.type, tuple(getattr(f, "_labelnames", ()))) for f in collector.collect()]
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
    names: dict[str, set[str]] = {"up": set()}
    for name, kind, labels in families:
        for suffix in suffixes[kind]:
            names[name + suffix] = set(labels) | ({"le"} if suffix == "_bucket" else set())
    for rule in _rules():
        if "record" in rule:
            names[rule["record"]] = {"le", "topic", "group", "endpoint"}
    return names


def _queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    return exprs + [r["expr"] for r in _rules()]


SELECTOR = re.compile(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\{[^}]*\})?")
KEYWORDS = {"sum", "by", "rate", "delta", "histogram_quantile", "and", "or", "unless", "on", "max", "time", "min",
            "avg", "count", "le", "without", "ignoring", "increase", "bool"}


def test_every_query_names_an_exported_metric_and_label():
    exported = _exported()
    assert "feedstore_ingest_consumer_lag" in exported and {"topic", "group", "partition"} <= exported[
        "feedstore_ingest_consumer_lag"]
    for expr in _queries():
        stripped = re.sub(r'"[^"]*"', '""', expr)
        stripped = re.sub(r"\[[^\]]*\]", "", stripped)
        stripped = re.sub(r"\b(by|on|without|ignoring)\s*\([^)]*\)", "", stripped)
        metrics = [(m.group(1), m.group(2)) for m in SELECTOR.finditer(stripped)
                   if m.group(1) not in KEYWORDS and not m.group(1)[0].isdigit()]
        assert metrics, expr
        for name, selector in metrics:
            assert name in exported, f"{name} in {expr!r} is not exported"
            if selector:
                used = set(re.findall(r"(\w+)\s*=~?", selector))
                assert used <= exported[name] | TARGET_LABELS, (name, used, expr)


def test_the_name_check_can_fail():
    exported = _exported()
    assert "feedstore_ingest_events_per_second" in exported
    assert "consumer_lag" not in exported and "events_per_second" not in exported  # the old names are gone


def test_the_readme_lists_every_metric_and_alert():
    readme = (PROJECT_ROOT / "README.md").read_text()
    families = {re.sub(r"_(total|bucket|sum|count)$", "", n) for n in _exported() if n.startswith("feedstore_")}
    assert families, "nothing exported"
    for name in families | {r["record"] for r in _rules() if "record" in r}:
        assert f"`{name}" in readme, f"README does not list {name}"
    for alert in (r["alert"] for r in _rules() if "alert" in r):
        assert f"| `{alert}` |" in readme, f"README does not explain {alert}"
