"""``feedstore freshness`` as a user runs it: per view the TTL, the allowed age and the age of the
newest online value, judged against the contract; a bad port is one line."""

from __future__ import annotations

import os
import subprocess
import sys

from feedstore.contract.features import VIEWS


def _cli(settings, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, **settings.feast_env()}
    return subprocess.run([sys.executable, "-m", "feedstore.cli", "freshness", *args], capture_output=True,
                          text=True, timeout=120, check=False, env=env)


def test_freshness_names_every_view_and_its_state(fs, settings, redis_client):
    from feedstore.feast import freshness

    out = _cli(settings)
    assert out.returncode == 0, out.stderr[-2000:]
    state = {f.view: f.status(freshness.now()) for f in freshness.freshness(redis_client, fs.project)}
    for view in VIEWS.values():
        line = next(x for x in out.stdout.splitlines() if view.name in x)
        assert f"{view.ttl.total_seconds() / 3600:.4g} h" in line, line
        assert f"{view.refresh.worst_age.total_seconds() / 3600:.4g} h" in line or view.pushed, line
        assert state[view.name] in line, line


def test_a_bad_metrics_port_is_one_line(settings):
    out = _cli(settings, "--metrics-port", "-1")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert [x for x in out.stderr.splitlines() if x.strip()] == ["error: --metrics-port must be 0..65535, not -1"]
