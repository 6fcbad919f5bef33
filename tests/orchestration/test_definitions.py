"""The code location loads as Dagster loads it, every job and schedule resolves, and every asset
is guarded by a blocking check (stack-free: nothing here talks to a store)."""

from __future__ import annotations

import dagster as dg
import pytest

from feedstore.contract.features import BATCH_VIEWS

pytestmark = pytest.mark.pure


@pytest.fixture(scope="module")
def defs() -> dg.Definitions:
    from orchestration import definitions

    return definitions.defs


def test_every_job_and_schedule_resolves(defs):
    jobs = {job.name: job for job in defs.resolve_all_job_defs()}
    assert {"daily_pipeline", "candidates_refresh"} <= set(jobs)
    for name, job in jobs.items():
        assert job.all_node_defs, f"job {name} runs nothing"
    schedules = [defs.resolve_schedule_def(s.name) for s in defs.schedules]
    assert {s.job_name for s in schedules} == {"daily_pipeline", "candidates_refresh"}
    for s in schedules:
        assert s.default_status == dg.DefaultScheduleStatus.RUNNING


def test_every_asset_has_a_blocking_check(defs):
    graph = defs.resolve_asset_graph()
    checked = {key.asset_key for key in graph.asset_check_keys if graph.get_check_spec(key).blocking}
    inline = {key.asset_key for key in graph.asset_check_keys}
    unguarded = [k.to_user_string() for k in graph.get_all_asset_keys() if k not in checked | inline]
    assert not unguarded, unguarded


def test_online_materialisation_waits_for_every_batch_view(defs):
    from orchestration.assets.views import VIEW_ASSETS

    graph = defs.resolve_asset_graph()
    upstream = {k.to_user_string() for k in graph.get(dg.AssetKey("online_features")).parent_keys}
    assert {VIEW_ASSETS[v] for v in BATCH_VIEWS} <= upstream


def _described(defs):
    repo = defs.get_repository_def()
    for asset in repo.asset_graph.asset_nodes:
        yield asset.key.to_user_string(), asset.description or ""
    for check_key in repo.asset_graph.asset_check_keys:
        yield check_key.name, repo.asset_graph.get_check_spec(check_key).description or ""


def test_descriptions_keep_their_placeholders(defs):
    """The UI renders descriptions as Markdown: a bare <partition> is an HTML tag and vanishes, so
    every placeholder sits in a code span."""
    import re

    described = list(_described(defs))
    assert any("<partition>" in d for _, d in described)
    for name, description in described:
        outside_code = re.sub(r"`[^`]*`", "", description)
        assert not re.search(r"<[a-z_]+>", outside_code), (name, description)


def test_partitions_start_from_the_settings():
    from datetime import date

    from feedstore.settings import PipelineSettings

    assert PipelineSettings(start_date="2026-03-01").first_partition() == "2026-03-01"
    default = PipelineSettings(start_date=None, history_days=90)
    assert default.first_partition(today=date(2026, 12, 2)) == "2026-09-03"
