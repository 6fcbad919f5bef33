"""The suites accept what the generator (devtools.synthetic.generator) produces: catalog, users, events."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from devtools.synthetic import generator
from expectations.runner import validate

END = datetime(2025, 11, 15, 12, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def spec() -> generator.GenerationSpec:
    return generator.spec_for("tiny", seed=3, end=END)


def test_generated_catalog_and_users_pass(spec) -> None:
    for suite, table in (("items", generator.items_table(spec)), ("users", generator.users_table(spec))):
        summary = validate(suite, table, as_of=END)
        assert summary.success, (suite, summary.failures)
        assert summary.row_count == table.num_rows > 0


def test_generated_events_pass_within_their_window(spec) -> None:
    """Generated events span the spec's days: allowed as ingested over that span, refused as of its end."""
    events = generator.events_table(spec)
    params = {"user_ids": generator.users_table(spec).column("user_id"),
              "item_ids": generator.items_table(spec).column("item_id")}
    summary = validate("activity_events", events, ingested_at=(spec.start, spec.end), **params)
    assert summary.success, summary.failures
    late = validate("activity_events", events, ingested_at=spec.end, **params)
    assert late.failed_rules == {"timestamp_window"}
