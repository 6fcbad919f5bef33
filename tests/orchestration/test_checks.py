"""A check's metadata links the Data Docs its validation wrote (stack-free: a frame in memory)."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from feedstore.settings import reset_settings_cache
from orchestration.checks import docs_links, result
from orchestration.resources import GreatExpectationsResource
from tests.expectations.conftest import NOW, make_items

pytestmark = pytest.mark.pure


def test_checks_link_the_data_docs_of_the_configured_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("FEED_PIPELINE_DATA_DOCS_DIR", str(tmp_path))
    reset_settings_cache()
    try:
        summary = GreatExpectationsResource().validate("items", make_items(), as_of=NOW)
    finally:
        monkeypatch.delenv("FEED_PIPELINE_DATA_DOCS_DIR")
        reset_settings_cache()
    checked = result(summary)
    page = Path(checked.metadata["data_docs"].value)
    assert page.is_file() and page.is_relative_to(tmp_path) and page.name == "index.html"
    assert checked.metadata["data_docs_url"] == dg.MetadataValue.url(page.as_uri())


def test_no_directory_no_links():
    assert docs_links(None) == {}
    assert docs_links("s3://bucket/docs/index.html") == {"data_docs": dg.MetadataValue.url("s3://bucket/docs/index.html")}
