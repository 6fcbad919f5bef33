"""The feature contract holds together, and what derives from it agrees with it (stack-free)."""

from __future__ import annotations

import pyarrow as pa
import pytest

from feedstore.contract import features as contract
from feedstore.contract.events import EVENT_SCHEMA
from feedstore.feast.definitions import FEAST_TYPES, repository

pytestmark = pytest.mark.pure


def test_every_feature_name_is_unique_across_views():
    names = [f.name for f in contract.all_features()]
    assert len(names) == len(set(names))
    assert not set(names) & {contract.EVENT_TIMESTAMP, "user_id", "item_id"}


def test_every_feature_is_described_and_its_rules_fit_its_type():
    for view in contract.VIEWS.values():
        assert view.description and view.ttl.total_seconds() > 0, view.name
        for f in view.features:
            assert f.description, f.name
            if f.bound is not None:
                assert f.kind in (contract.Kind.INT64, contract.Kind.FLOAT64), f.name
            if f.dim is not None:
                assert f.kind in (contract.Kind.FLOAT32_LIST, contract.Kind.INT64_LIST), f.name
            for other in f.at_most:
                assert other in view.columns, (f.name, other)


def test_the_feast_repository_is_the_contract():
    objects = repository()
    for view in contract.VIEWS.values():
        fv = objects[view.name]
        assert fv.ttl == view.ttl
        assert [(f.name, f.dtype, f.description) for f in fv.features] == [
            (f.name, FEAST_TYPES[f.kind], f.description) for f in view.features]
        assert fv.entities == [view.entity.name]
        assert (fv.stream_source is not None) == view.pushed
    for service, members in contract.SERVICES.items():
        assert [p.name for p in objects[service].feature_view_projections] == list(members)
    assert set(contract.SERVICES["ranking"]) <= set(contract.TRAINING_VIEWS)


def test_arrow_schemas_lead_with_the_key_and_event_time():
    for view in contract.VIEWS.values():
        schema = view.arrow_schema(pa.field("extra", pa.int8()))
        assert schema.names == [view.entity.join_key, contract.EVENT_TIMESTAMP, *view.columns, "extra"]
        assert schema.field(contract.EVENT_TIMESTAMP).type == EVENT_SCHEMA.field("timestamp").type


def test_every_view_outlives_its_refresh():
    """The freshness contract: a value lives at least until the next one lands, so no entity that
    has a value goes dark between runs; the contract refuses a view that breaks it."""
    from datetime import timedelta

    for view in contract.VIEWS.values():
        assert view.ttl >= view.refresh.every + view.refresh.lag, view.name
    with pytest.raises(ValueError, match="TTL"):
        contract.View("short", contract.USER, timedelta(hours=24), contract.DAILY, "d",
                      contract.USER_EMBEDDING.features, tier="embedding")


def test_each_feature_is_defined_once_in_its_description():
    """Rates say per view and dwell says over views; no definition is repeated in a view's text."""
    rates = [f for f in contract.all_features() if "_rate_" in f.name and f.name.startswith(("like", "share", "comment"))]
    assert rates and all("per view" in f.description for f in rates)
    dwell = [f for f in contract.all_features() if f.name.startswith("avg_dwell")]
    assert dwell and all("views" in f.description for f in dwell)
    descriptions = [f.description for f in contract.all_features()]
    assert len(descriptions) == len(set(descriptions))
