"""Our metrics stay per instance even when Feast is imported (its metrics module switches
prometheus_client to multiprocess files when it comes first)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.pure

PROBE = """
import feedstore
import feast.metrics
from ingestion.metrics import IngestMetrics
a = IngestMetrics()
a.events.inc(3)
b = IngestMetrics()
print(a.registry.get_sample_value("feedstore_ingest_events_total"), b.registry.get_sample_value("feedstore_ingest_events_total"))
"""


def _run(probe: str) -> subprocess.CompletedProcess:
    """In a process of its own whose environment names no multiprocess directory (this one's
    may: Feast set it when it was imported here)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROMETHEUS_MULTIPROC")}
    return subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120,
                          check=True)


def test_two_metric_sets_in_one_process_do_not_add_up():
    out = _run(PROBE)
    assert out.stdout.split() == ["3.0", "0.0"], out.stderr[-2000:]


def test_without_the_guard_they_would():
    """The probe above can fail: imported after Feast, prometheus_client shares values."""
    probe = PROBE.replace("import feedstore\nimport feast.metrics\n", "import feast.metrics\nimport feedstore\n")
    out = _run(probe)
    assert out.stdout.split() == ["3.0", "3.0"], out.stderr[-2000:]
