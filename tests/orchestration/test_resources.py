"""Resources give back what they open: a run that uses the Feast store leaves no Postgres
connection behind (the shared server allows 200 in all, and a backfill is many runs)."""

import dagster as dg

from orchestration.resources import FeastResource
from tests.orchestration.conftest import pipeline_connections


def test_runs_using_the_feast_store_leave_no_connection_open(settings):
    @dg.asset
    def reads_the_registry(feast: FeastResource) -> None:
        store = feast.store()
        assert store is feast.store()  # one store per execution
        assert store.get_feature_view("item_embedding").ttl is not None

    before = pipeline_connections(settings)
    for _ in range(3):
        assert dg.materialize([reads_the_registry], resources={"feast": FeastResource()}).success
    assert pipeline_connections(settings) == before


def test_a_closed_store_holds_no_connection(settings):
    from feedstore.feast.store import close, store

    before = pipeline_connections(settings)
    fs = store(settings.as_component("pipeline"))
    fs.list_feature_views()
    assert pipeline_connections(settings) > before
    close(fs)
    assert pipeline_connections(settings) == before
