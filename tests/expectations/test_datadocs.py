"""Data Docs offline: every page of a validation's site loads its CSS and JavaScript from the site
itself, and in headless Chromium with no network the validation page is styled and its results
table filled by bootstrap-table (without the rewrite it is not; the screenshot is kept under
build/screenshots/)."""

from __future__ import annotations

import re
import subprocess

import pytest

from expectations import datadocs
from expectations.runner import validate
from feedstore.settings import PROJECT_ROOT
from tests.expectations.conftest import NOW, make_items

SCREENSHOTS = PROJECT_ROOT / "build" / "screenshots"
OFFLINE = "--host-resolver-rules=MAP * ~NOTFOUND"  # no host resolves: nothing can come from a CDN


def _site(tmp_path, name, monkeypatch=None):
    if monkeypatch is not None:
        monkeypatch.setattr(datadocs, "localise", lambda site: 0)
    validate("items", make_items(), as_of=NOW, docs_dir=tmp_path / name)
    return tmp_path / name


def _validation_page(site):
    (page,) = (site / "validations").rglob("*.html")
    return page


@pytest.mark.pure
def test_no_page_loads_anything_from_a_cdn(tmp_path):
    site = _site(tmp_path, "docs")
    pages = list(site.rglob("*.html"))
    assert len(pages) >= 3
    for page in pages:
        html = page.read_text()
        assert datadocs.remote_assets(html) == [], page
        assert not re.search(r'<(?:script|link)\b[^>]*(?:src|href)="https?://', html), page
        for ref in re.findall(r'(?:src|href)="([^"#:]+\.(?:css|js|png))"', html):
            assert (page.parent / ref).resolve().is_file(), (page, ref)


def _render(chromium, page, tmp_path, screenshot=None) -> str:
    args = [*chromium, f"--user-data-dir={tmp_path / 'profile'}", OFFLINE, "--virtual-time-budget=10000",
            "--allow-file-access-from-files"]
    if screenshot:
        subprocess.run([*args, f"--screenshot={screenshot}", page.as_uri()], capture_output=True, timeout=120,
                       check=False)
    return subprocess.run([*args, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120,
                          check=False).stdout


def test_validation_page_renders_offline_in_chromium(chromium, tmp_path, monkeypatch):
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    shot = SCREENSHOTS / "data_docs_validation.png"
    dom = _render(chromium, _validation_page(_site(tmp_path, "docs")), tmp_path, shot)
    assert 'class="bootstrap-table' in dom, dom[-2000:]  # the plugin ran and built its table
    assert "values must never be null." in dom and "item_id" in dom
    assert shot.is_file() and shot.stat().st_size > 20_000

    raw = _render(chromium, _validation_page(_site(tmp_path, "raw", monkeypatch)), tmp_path)
    assert "values must never be null." in raw
    assert 'class="bootstrap-table' not in raw, "the CDN page rendered offline: this test proves nothing"
