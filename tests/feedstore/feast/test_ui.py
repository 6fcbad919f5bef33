"""``feast ui`` through ``feedstore feast`` on the session's registry: the page, its registry API and
the feature views rendered in headless Chromium."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import requests

from tests.conftest import free_port


@pytest.fixture(scope="module")
def feast_ui(feast_applied, tmp_path_factory):
    port = free_port()
    log = tmp_path_factory.mktemp("feast_ui") / "ui.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "feedstore.cli", "feast", "ui", "-h", "127.0.0.1", "-p", str(port)],
                                env=os.environ.copy(), stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, log.read_text()[-3000:]
            try:
                if requests.get(f"{url}/projects-list.json", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, "feast ui did not answer within 120s: " + log.read_text()[-3000:]
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_page_and_registry_api(feast_ui, fs):
    page = requests.get(feast_ui, timeout=10)
    assert page.status_code == 200 and "<title>Feast Feature Store</title>" in page.text
    projects = requests.get(f"{feast_ui}/projects-list.json", timeout=10).json()["projects"]
    assert [p["id"] for p in projects] == [fs.project]
    views = requests.get(f"{feast_ui}/api/v1/feature_views", params={"project": fs.project}, timeout=30).json()
    assert {v["spec"]["name"] for v in views["featureViews"]} == {v.name for v in fs.list_feature_views()}


def test_feature_views_render_in_chromium(feast_ui, fs, chromium, tmp_path):
    dom = subprocess.run([*chromium, f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=10000",
                          "--dump-dom", f"{feast_ui}/p/{fs.project}/feature-view"],
                         capture_output=True, text=True, timeout=120, check=False).stdout
    missing = [v.name for v in fs.list_feature_views() if v.name not in dom]
    assert not missing, f"not rendered: {missing}"
