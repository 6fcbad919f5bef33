"""The pipeline exporter against a real Dagster instance and Feast registry: what a run of the
archive leaves is what a scrape reports, and every alert's pipeline metric is among them."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import dagster as dg
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from feedstore.contract.features import BATCH_VIEWS, VIEWS
from orchestration import metrics
from orchestration.assets.archive import RECONCILED_CHECK


def _samples(reg) -> dict[tuple[str, tuple], float]:
    text = generate_latest(reg).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


@pytest.fixture(scope="module")
def archived(tiny_feed, settings):
    from orchestration.definitions import ASSETS, CHECKS
    from orchestration.resources import resources

    instance = dg.DagsterInstance.ephemeral()
    day = tiny_feed.days[-1]
    result = dg.materialize([*ASSETS, *CHECKS], partition_key=day.isoformat(), resources=resources(),
                            selection=dg.AssetSelection.assets("activity_archive"), instance=instance)
    return instance, day, result


def test_a_run_is_what_the_scrape_reports(archived, settings):
    from orchestration.resources import FeastResource

    instance, day, result = archived
    got = _samples(metrics.registry(lambda: instance, FeastResource().store))
    asset = (("asset", "activity_archive"),)
    (materialization,) = result.asset_materializations_for_node("activity_archive")
    assert got[("feedstore_pipeline_asset_rows", asset)] == materialization.metadata["dagster/row_count"].value
    day_end = datetime.combine(day + timedelta(days=1), datetime.min.time(), tzinfo=timezone.utc).timestamp()
    assert got[("feedstore_pipeline_partition_end_timestamp_seconds", asset)] == day_end
    assert 0 < got[("feedstore_pipeline_asset_duration_seconds", asset)] < 3600
    assert got[("feedstore_pipeline_check_passed", (("asset", "activity_archive"), ("check", RECONCILED_CHECK)))] == 1
    assert ("feedstore_pipeline_asset_rows", (("asset", "online_features"),)) not in got  # never run here
    assert got[("feedstore_pipeline_instance_up", ())] == 1
    for view in BATCH_VIEWS:
        assert got[("feedstore_pipeline_view_ttl_seconds", (("view", view),))] == VIEWS[view].ttl.total_seconds()


def test_an_unreadable_instance_is_reported_not_raised():
    def broken():
        raise RuntimeError("no instance")
    got = _samples(metrics.registry(broken))
    assert got[("feedstore_pipeline_instance_up", ())] == 0
