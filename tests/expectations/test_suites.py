"""Each suite passes on clean data and fails, naming the right rule and column, on each defect."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from expectations.runner import validate
from feedstore.contract import rules
from tests.expectations.conftest import (
    ITEM_IDS,
    NOW,
    USER_IDS,
    make_events,
    make_item_features,
    make_items,
    make_training,
    make_user_features,
    make_users,
)

pytestmark = pytest.mark.pure

EVENT_PARAMS = {"ingested_at": NOW, "user_ids": USER_IDS, "item_ids": ITEM_IDS}


def put(table: pa.Table, column: str, row: int, value, type_: pa.DataType | None = None) -> pa.Table:
    """``table`` with one cell replaced (the rest untouched)."""
    values = table.column(column).to_pylist()
    values[row] = value
    field = table.schema.field(column)
    return table.set_column(table.schema.get_field_index(column), field.with_nullable(True),
                            pa.array(values, type_ or field.type))


def cast(table: pa.Table, column: str, type_: pa.DataType) -> pa.Table:
    i = table.schema.get_field_index(column)
    return table.set_column(i, pa.field(column, type_), pc.cast(table.column(column), type_))


def failed(summary) -> set[tuple[str, str | None]]:
    return {(f.rule, f.column) for f in summary.failures}


CLEAN = {
    "activity_events": (make_events, EVENT_PARAMS),
    "items": (make_items, {"as_of": NOW}),
    "users": (make_users, {"as_of": NOW}),
    "user_features": (make_user_features, {}),
    "item_features": (make_item_features, {}),
    "training_dataset": (make_training, {"ds": NOW.date()}),
}


@pytest.mark.parametrize("suite", sorted(CLEAN))
def test_clean_data_passes(suite: str) -> None:
    make, params = CLEAN[suite]
    summary = validate(suite, make(), **params)
    assert summary.success, summary.failures
    assert summary.row_count == make().num_rows
    assert summary.evaluated > 5


Defect = Callable[[pa.Table], pa.Table]
EVENT_DEFECTS: dict[str, tuple[Defect, set[tuple[str, str]]]] = {
    "unknown user": (lambda t: put(t, "user_id", 3, 999_999), {("user_exists", "user_id")}),
    "item not in catalog": (lambda t: put(t, "item_id", 3, 7), {("item_in_catalog", "item_id")}),
    "too old": (lambda t: put(t, "timestamp", 3, NOW - timedelta(hours=2)), {("timestamp_window", "timestamp")}),
    "in the future": (lambda t: put(t, "timestamp", 3, NOW + timedelta(minutes=30)),
                      {("timestamp_window", "timestamp")}),
    "bad event type": (lambda t: put(t, "event_type", 3, "poke"), {("event_type_allowed", "event_type")}),
    "duplicate id": (lambda t: put(t, "event_id", 3, t.column("event_id")[4].as_py()),
                     {("no_duplicate_events", "event_id")}),
    "malformed id": (lambda t: put(t, "event_id", 3, "not-a-uuid"), {("event_id_format", "event_id")}),
    "null key": (lambda t: put(t, "item_id", 3, None), {("not_null", "item_id")}),
    "negative id": (lambda t: put(t, "user_id", 3, -4),
                    {("id_positive", "user_id"), ("user_exists", "user_id")}),
    "dwell too long": (lambda t: put(t, "dwell_time_ms", 3, rules.MAX_DWELL_MS + 1), {("dwell_bounds", "dwell_time_ms")}),
    "negative dwell": (lambda t: put(t, "dwell_time_ms", 3, -1), {("dwell_bounds", "dwell_time_ms")}),
    "bad device": (lambda t: put(t, "device", 3, "toaster"), {("device_allowed", "device")}),
    "bad platform": (lambda t: put(t, "platform", 3, "symbian"), {("platform_allowed", "platform")}),
    "long session": (lambda t: put(t, "session_id", 3, "s" * (rules.MAX_SESSION_ID_LENGTH + 1)),
                     {("session_id_length", "session_id")}),
    "control character in session": (lambda t: put(t, "session_id", 3, "abc\ndef"),
                                     {("session_id_printable", "session_id")}),
    "line separator in session": (lambda t: put(t, "session_id", 3, "abc\u2028"),
                                  {("session_id_printable", "session_id")}),
    "ids as strings": (lambda t: cast(t, "user_id", pa.string()),  # and so membership cannot be shown
                       {("type", "user_id"), ("id_positive", "user_id"), ("user_exists", "user_id")}),
    "missing column": (lambda t: t.drop_columns(["platform"]), {("column_present", "platform")}),
}


@pytest.mark.parametrize("defect", sorted(EVENT_DEFECTS))
def test_activity_events_defects(defect: str) -> None:
    inject, expected = EVENT_DEFECTS[defect]
    summary = validate("activity_events", inject(make_events()), **EVENT_PARAMS)
    assert not summary.success
    assert failed(summary) == expected


def test_examples_name_the_offending_values() -> None:
    table = put(put(make_events(), "item_id", 3, 7), "item_id", 9, 8)
    [failure] = validate("activity_events", table, **EVENT_PARAMS).failures
    assert failure.unexpected_count == 2
    assert sorted(failure.examples) == [7, 8]


def test_window_from_an_ingestion_range() -> None:
    """An archived day: events are allowed from an hour before its first ingestion on."""
    start = NOW - timedelta(hours=6)
    table = put(make_events(), "timestamp", 3, start - timedelta(minutes=59))
    params = {**EVENT_PARAMS, "ingested_at": (start, NOW)}
    assert validate("activity_events", table, **params).success
    table = put(table, "timestamp", 4, start - timedelta(minutes=61))
    assert failed(validate("activity_events", table, **params)) == {("timestamp_window", "timestamp")}


def _embedding_row(table: pa.Table, column: str, row: int, values) -> pa.Table:
    return put(table, column, row, values)


ITEM_DEFECTS: dict[str, tuple[Defect, set[tuple[str, str]]]] = {
    "duplicate id": (lambda t: put(t, "item_id", 3, t.column("item_id")[4].as_py()), {("id_unique", "item_id")}),
    "zero id": (lambda t: put(t, "item_id", 3, 0), {("id_positive", "item_id")}),
    "bad category": (lambda t: put(t, "category", 3, "astrology"), {("category_in_vocabulary", "category")}),
    "null category": (lambda t: put(t, "category", 3, None), {("not_null", "category")}),
    "bad media type": (lambda t: put(t, "media_type", 3, "hologram"), {("media_type_allowed", "media_type")}),
    "created in the future": (lambda t: put(t, "created_at", 3, NOW + timedelta(days=1)),
                              {("not_in_future", "created_at")}),
    "short embedding": (lambda t: put(t, "content_embedding", 3, [0.5] * (rules.EMBEDDING_DIM - 1)),
                        {("vector_dimension", "content_embedding")}),
    "nan in embedding": (lambda t: put(t, "content_embedding", 3, [float("nan")] + [0.1] * (rules.EMBEDDING_DIM - 1)),
                         {("vector_finite", "content_embedding")}),
    "inf in embedding": (lambda t: put(t, "content_embedding", 3, [float("inf")] * rules.EMBEDDING_DIM),
                         {("vector_finite", "content_embedding")}),
    "null embedding": (lambda t: put(t, "content_embedding", 3, None), {("not_null", "content_embedding")}),
}


@pytest.mark.parametrize("defect", sorted(ITEM_DEFECTS))
def test_items_defects(defect: str) -> None:
    inject, expected = ITEM_DEFECTS[defect]
    assert failed(validate("items", inject(make_items()), as_of=NOW)) == expected


USER_DEFECTS: dict[str, tuple[Defect, set[tuple[str, str]]]] = {
    "duplicate id": (lambda t: put(t, "user_id", 3, t.column("user_id")[4].as_py()), {("id_unique", "user_id")}),
    "negative id": (lambda t: put(t, "user_id", 3, -1), {("id_positive", "user_id")}),
    "created in the future": (lambda t: put(t, "created_at", 3, NOW + timedelta(hours=1)),
                              {("not_in_future", "created_at")}),
    "unknown category": (lambda t: put(t, "preferred_categories", 3, ["tech", "astrology"]),
                         {("list_in_vocabulary", "preferred_categories")}),
    "bad country": (lambda t: put(t, "country", 3, "XX"), {("country_in_vocabulary", "country")}),
    "long embedding": (lambda t: put(t, "user_embedding", 3, [0.5] * (rules.EMBEDDING_DIM + 1)),
                       {("vector_dimension", "user_embedding")}),
}


@pytest.mark.parametrize("defect", sorted(USER_DEFECTS))
def test_users_defects(defect: str) -> None:
    inject, expected = USER_DEFECTS[defect]
    assert failed(validate("users", inject(make_users()), as_of=NOW)) == expected


def _scaled_dist(t: pa.Table, row: int, factor: float) -> pa.Table:
    dist = np.array(t.column("category_dist_30d")[row].as_py()) * factor
    return put(t, "category_dist_30d", row, dist.tolist())


def _active_row(t: pa.Table) -> int:
    return int(np.argmax(t.column("interactions_30d").to_numpy() > 0))


USER_FEATURE_DEFECTS: dict[str, tuple[Defect, set[tuple[str, str]]]] = {
    "rate above 1": (lambda t: put(t, "like_rate_7d", 3, 1.5), {("rate_in_unit_interval", "like_rate_7d")}),
    "negative rate": (lambda t: put(t, "share_rate_30d", 3, -0.1), {("rate_in_unit_interval", "share_rate_30d")}),
    "negative count": (lambda t: put(t, "unique_items_7d", 3, -1), {("count_non_negative", "unique_items_7d")}),
    "7d above 30d": (lambda t: put(t, "interactions_7d", 5, t.column("interactions_30d")[5].as_py() + 1),
                     {("window_order", "interactions_7d<=interactions_30d")}),
    "active days above window": (lambda t: put(t, "active_days_7d", 3, 8),
                                 {("active_days_bounds", "active_days_7d")}),
    "distribution sums to 0.5": (lambda t: _scaled_dist(t, _active_row(t), 0.5),
                                 {("distribution_sums_to_1", "category_dist_30d")}),
    "distribution for no activity": (lambda t: put(t, "category_dist_30d", 0, [1.0] + [0.0] * 15),
                                     {("distribution_sums_to_1", "category_dist_30d")}),
    "negative share": (lambda t: put(t, "category_dist_30d", _active_row(t), [1.5, -0.5] + [0.0] * 14),
                       {("distribution_non_negative", "category_dist_30d")}),
    "missing feature": (lambda t: t.drop_columns(["comment_rate_30d"]), {("column_present", "comment_rate_30d")}),
    "null key": (lambda t: put(t, "user_id", 3, None), {("not_null", "user_id")}),
}


@pytest.mark.parametrize("defect", sorted(USER_FEATURE_DEFECTS))
def test_user_features_defects(defect: str) -> None:
    inject, expected = USER_FEATURE_DEFECTS[defect]
    assert failed(validate("user_features", inject(make_user_features()))) == expected


ITEM_FEATURE_DEFECTS: dict[str, tuple[Defect, set[tuple[str, str]]]] = {
    "1d above 7d": (lambda t: put(t, "views_1d", 3, t.column("views_7d")[3].as_py() + 1),
                    {("window_order", "views_1d<=views_7d")}),
    "engagement above 1": (lambda t: put(t, "engagement_rate_7d", 3, 1.01),
                           {("rate_in_unit_interval", "engagement_rate_7d")}),
    "zero freshness": (lambda t: put(t, "freshness_score", 3, 0.0), {("rate_in_unit_interval", "freshness_score")}),
    "negative views": (lambda t: put(t, "views_1d", 3, -1), {("count_non_negative", "views_1d")}),
    "more viewers than views": (lambda t: put(t, "unique_viewers_7d", 3, t.column("views_7d")[3].as_py() + 1),
                                {("window_order", "unique_viewers_7d<=views_7d")}),
    "duplicate entity row": (lambda t: put(t, "item_id", 3, t.column("item_id")[4].as_py()),
                             {("entity_unique_per_timestamp", "item_id")}),
}


@pytest.mark.parametrize("defect", sorted(ITEM_FEATURE_DEFECTS))
def test_item_features_defects(defect: str) -> None:
    inject, expected = ITEM_FEATURE_DEFECTS[defect]
    assert failed(validate("item_features", inject(make_item_features()))) == expected


def _all_negative(t: pa.Table) -> pa.Table:
    t = t.set_column(t.schema.get_field_index("label"), "label", pa.array(np.zeros(t.num_rows, np.int64)))
    return t.set_column(t.schema.get_field_index("sample_type"), "sample_type",
                        pa.array(["random_negative"] * t.num_rows))


TRAINING_DEFECTS: dict[str, tuple[Defect, set[tuple[str, str]]]] = {
    "label 2": (lambda t: put(t, "label", 0, 2), {("label_binary", "label"), ("label_matches_sample_type", "label")}),
    "label contradicts sample type": (lambda t: put(t, "label", 1, 1), {("label_matches_sample_type", "label")}),
    "no positives": (_all_negative, {("label_balance", "label")}),
    "null join key": (lambda t: put(t, "item_id", 3, None), {("not_null", "item_id")}),
    "null timestamp": (lambda t: put(t, "event_timestamp", 3, None), {("not_null", "event_timestamp")}),
    "timestamp outside partition": (lambda t: put(t, "event_timestamp", 3, NOW + timedelta(days=1)),
                                    {("timestamp_in_partition", "event_timestamp")}),
    "feature column missing": (lambda t: t.drop_columns(["item_embedding"]), {("column_present", "item_embedding")}),
    "bad sample type": (lambda t: put(t, "sample_type", 3, "easy_negative"),
                        {("sample_type_allowed", "sample_type"), ("label_matches_sample_type", "label")}),
    "feature out of bounds": (lambda t: put(t, "engagement_rate_7d", 3, 3.0),
                              {("rate_in_unit_interval", "engagement_rate_7d")}),
}


@pytest.mark.parametrize("defect", sorted(TRAINING_DEFECTS))
def test_training_dataset_defects(defect: str) -> None:
    inject, expected = TRAINING_DEFECTS[defect]
    assert failed(validate("training_dataset", inject(make_training()), ds=NOW.date())) == expected


def test_no_network_calls(monkeypatch, tmp_path) -> None:
    """Analytics off, no version checks: validating a frame (with Data Docs) opens no socket."""
    import socket

    opened: list = []
    real_connect = socket.socket.connect

    def connect(self, address):
        opened.append(address)
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    summary = validate("items", make_items(), as_of=NOW, docs_dir=tmp_path / "docs")
    assert summary.success and (tmp_path / "docs" / "index.html").is_file()
    assert opened == []
