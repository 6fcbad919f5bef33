"""``feast apply``/``plan`` from the CLI against the stack, registry in Postgres."""

from __future__ import annotations

import psycopg

VIEWS = {
    "user_activity_features": 2 * 86400, "user_profile_features": 7 * 86400, "user_embedding": 30 * 3600,
    "item_catalog_features": 30 * 86400, "item_embedding": 7 * 86400, "item_engagement_features": 2 * 86400,
    "user_realtime_features": 3600, "user_candidates": 16 * 3600,
}


def test_apply_writes_the_registry_to_postgres(feast_applied, settings):
    assert "Deploying infrastructure for user_embedding" in feast_applied.stdout
    with psycopg.connect(settings.postgres.dsn) as conn:
        names = {r[0] for r in conn.execute(
            "SELECT feature_view_name FROM feature_views WHERE project_id = %s", ("feed_ranking",))}
    assert names == set(VIEWS)


def test_definitions_follow_the_contract(fs):
    views = {v.name: v for v in fs.list_feature_views()}
    assert {n: int(v.ttl.total_seconds()) for n, v in views.items()} == VIEWS
    for view in views.values():
        assert all(f.description for f in view.features), view.name
    assert {e.name: e.join_key for e in fs.list_entities()} == {"user": "user_id", "item": "item_id"}
    ranking = {p.name for p in fs.get_feature_service("ranking").feature_view_projections}
    training = {p.name for p in fs.get_feature_service("training").feature_view_projections}
    retrieval = {p.name for p in fs.get_feature_service("retrieval").feature_view_projections}
    assert ranking == set(VIEWS) - {"user_candidates"} and retrieval == {"user_candidates"}
    assert training == ranking  # the model trains on every feature it is served
    assert views["user_realtime_features"].stream_source.name == "user_realtime_push"


def test_plan_after_apply_reports_no_changes(feast_planned):
    result = feast_planned
    assert result.returncode == 0, result.stderr[-3000:]
    assert "No changes to registry" in result.stdout, result.stdout[-2000:]
    assert "No changes to infrastructure" in result.stdout
