"""Online reads after materialization: values, repeated entities, the TTL on read, Feast's
``online_read`` API, and the direct path answering exactly as Feast's."""

from __future__ import annotations

import numpy as np
import pytest

from feedstore.feast import private
from tests.feedstore.feast.online.conftest import HOUR_US, ITEM_IDS, expected_rows, latest, now_us


def test_online_values_equal_the_newest_source_rows(fs, online_tables):
    users = [1, 2, 40, 999]  # 999 has no features at all
    items = [1001, 1080, 1050, 5]
    got = fs.get_online_features(features=fs.get_feature_service("ranking"),
                                 entity_rows=[{"user_id": u, "item_id": i} for u, i in zip(users, items)]).to_dict()
    ranking = {v.name for v in fs.get_feature_service("ranking").feature_view_projections}
    expected = expected_rows({n: t for n, t in online_tables.items() if n in ranking}, users, items)
    assert len(got) == len(expected[0])
    for col in expected[0]:
        assert got[col] == [row[col] for row in expected], col


def test_one_user_500_items_reads_every_row(fs, online_tables):
    items = list(ITEM_IDS) * 6 + [7] * 20
    got = fs.get_online_features(features=fs.get_feature_service("ranking"),
                                 entity_rows=[{"user_id": 3, "item_id": int(i)} for i in items]).to_dict()
    assert len(got["item_embedding"]) == 500
    embeddings = {r["item_id"]: r["item_embedding"] for r in online_tables["item_embedding"].to_pylist()}
    assert got["item_embedding"] == [embeddings.get(i) for i in items]
    user_emb = latest(online_tables["user_embedding"], "user_id")[3]["user_embedding"]
    assert got["user_embedding"] == [user_emb] * 500


def test_a_value_past_its_ttl_is_not_served_even_if_the_key_survives(fs, online_tables, redis_client):
    """E.g. a TTL shortened after the write: the read itself enforces the view's TTL."""
    key = "feed_ranking:{user_id=9}:user_embedding"
    before = fs.get_online_features(features=["user_embedding:user_embedding"],
                                    entity_rows=[{"user_id": 9}]).to_dict()["user_embedding"]
    assert before[0] is not None
    redis_client.hset(key, "_ts", str(now_us() - 31 * HOUR_US))
    resp = fs.get_online_features(features=["user_embedding:user_embedding"], entity_rows=[{"user_id": 9}])
    assert resp.to_dict()["user_embedding"] == [None]
    assert redis_client.exists(key)


def test_online_read_api_applies_the_ttl(fs, online_tables):
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    store = fs._get_provider().online_store
    view = fs.get_feature_view("item_embedding")
    rows = store.online_read(fs.config, view, [EntityKey(join_keys=["item_id"], entity_values=[Value(int64_val=i)])
                                               for i in (1001, 424242)])
    ts, values = rows[0]
    assert ts is not None and list(values["item_embedding"].float_list_val.val) == \
        latest(online_tables["item_embedding"], "item_id")[1001]["item_embedding"]
    assert rows[1] == (None, None)


@pytest.mark.parametrize("full_names", [False, True])
def test_direct_path_answers_exactly_as_feasts_path(fs, online_tables, redis_client, full_names):
    """Plain int keys take the direct path (proto built lazily); numpy ints take Feast's path
    (entity protos, ``_read_features_per_fv``). Both, and Feast's own converter, must agree."""
    from feast.online_response import OnlineResponse

    redis_client.hset("feed_ranking:{user_id=12}:user_embedding", "_ts", str(now_us() - 31 * HOUR_US))
    users, items = [12, 12, 999, 4], [1001, 1001, 1002, 77777]  # expired, repeated, unknown user, unknown item
    kwargs = {"features": fs.get_feature_service("ranking"), "full_feature_names": full_names,
              "include_feature_view_version_metadata": full_names}
    direct = fs.get_online_features(entity_rows=[{"user_id": u, "item_id": i} for u, i in zip(users, items)],
                                    **kwargs)
    feasts = fs.get_online_features(entity_rows={"user_id": [np.int64(u) for u in users],
                                                 "item_id": [np.int64(i) for i in items]}, **kwargs)
    assert direct._entities is not None and feasts._entities is None  # each took the path meant
    assert direct.to_dict() == feasts.to_dict() == OnlineResponse(feasts.proto, private.response_feature_types(feasts)).to_dict()
    assert direct.to_dict(True) == feasts.to_dict(True)
    assert direct.proto == feasts.proto
    assert direct.to_df().equals(feasts.to_df())
    got = direct.to_dict()
    emb = "user_embedding__user_embedding" if full_names else "user_embedding"
    assert got[emb][:3] == [None, None, None] and got[emb][3] is not None
    statuses = direct.proto.results[list(direct.proto.metadata.feature_names.val).index(emb)].statuses
    assert list(statuses) == [4, 4, 3, 1]  # OUTSIDE_MAX_AGE, OUTSIDE_MAX_AGE, NOT_FOUND, PRESENT


USER, PAIR = [{"user_id": 1}], [{"user_id": 1, "item_id": 1001}]


@pytest.mark.parametrize(("features", "rows", "words", "right"), [
    (["user_embedding:user_embedding"], [{"usr_id": 1}],
     "unknown join key usr_id: the requested features are keyed by user_id", USER),
    (["user_embedding:user_embedding"], {"usr_id": [1, 2]},
     "unknown join key usr_id: the requested features are keyed by user_id", USER),
    (["user_embedding:user_embedding"], PAIR, "unknown join key item_id: the requested features are keyed by user_id",
     USER),
    (["user_embedding:user_embedding", "item_embedding:item_embedding"], USER,
     "missing join key item_id for the requested features", PAIR),
    ("ranking", USER, "missing join key item_id for the requested features", PAIR),
])
def test_a_wrong_join_key_through_the_sdk_names_it_and_the_expected_ones(fs, online_tables, features, rows, words,
                                                                         right):
    """As the HTTP path answers (tests/feedstore/feast/test_serving.py): Feast's own message names every
    key of the project ("Missing join key values for keys: ['item_id', 'user_id']")."""
    import asyncio

    from feedstore.feast.online.requests import JoinKeyError

    features = fs.get_feature_service(features) if isinstance(features, str) else features
    with pytest.raises(JoinKeyError) as caught:
        fs.get_online_features(features=features, entity_rows=rows)
    assert str(caught.value) == words
    assert isinstance(caught.value, KeyError) and caught.value.http_status_code() == 400
    with pytest.raises(JoinKeyError) as caught:
        asyncio.run(fs.get_online_features_async(features=features, entity_rows=rows))
    assert str(caught.value) == words
    assert fs.get_online_features(features=features, entity_rows=right).to_dict()["user_id"] == [1]


def test_a_500_row_read_returns_what_was_written(fs, online_tables, redis_client):
    """The direct path's per-column decoding, decoding during the read and row expansion, over
    every view of ``ranking``: repeated items, an unknown user and item, a view missing for one
    item and a value past its TTL all come back as written (or null)."""
    from tests.feedstore.feast.online.conftest import ITEM_VIEWS, USER_VIEWS, write_at

    ids = np.arange(3001, 3041)
    written = {name: write_at(fs, name, ids, now_us() - 5 * 60_000_000, seed=300 + k)
               for k, name in enumerate(ITEM_VIEWS)}
    ttl_us = int(fs.get_feature_view("item_embedding").ttl.total_seconds() * 1_000_000)
    redis_client.hset("feed_ranking:{item_id=3001}:item_embedding", "_ts", str(now_us() - ttl_us - HOUR_US))
    redis_client.delete("feed_ranking:{item_id=3002}:item_catalog_features")
    items = [int(i) for i in ids] * 12 + [3001, 3002, 424242] * 6 + [3040, 3039]
    assert len(items) == 500
    ranking = {v.name for v in fs.get_feature_service("ranking").feature_view_projections}
    tables = {n: t for n, t in {**{n: online_tables[n] for n in USER_VIEWS}, **written}.items() if n in ranking}
    assert set(ITEM_VIEWS) <= set(tables)
    for user in (5, 999):  # 999: no user features at all
        response = fs.get_online_features(features=fs.get_feature_service("ranking"),
                                          entity_rows=[{"user_id": user, "item_id": i} for i in items])
        got = response.to_dict()
        expected = expected_rows(tables, [user] * len(items), items)
        for row in expected:
            gone = {3001: "item_embedding", 3002: "item_catalog_features"}.get(row["item_id"])
            for col in written[gone].column_names if gone else []:
                if col not in ("item_id", "event_timestamp"):
                    row[col] = None
        assert sorted(got) == sorted(expected[0])
        for col in expected[0]:
            assert got[col] == [row[col] for row in expected], col
        emb = list(response.proto.metadata.feature_names.val).index("item_embedding")
        assert {s for i, s in zip(items, response.proto.results[emb].statuses) if i == 3001} == {4}  # OUTSIDE_MAX_AGE
        again = response.to_dict()
        assert again == got and again["item_embedding"][2] is not got["item_embedding"][2]
        got["tags"][2].append("mutated")  # rows of one entity never share a list
        assert got["tags"][42] == again["tags"][42] != got["tags"][2]


def test_an_error_reply_mid_read_raises_and_the_next_read_is_answered(fs, online_tables, redis_client):
    """Replies are consumed view by view; an error reply stops the read, and the connection it
    leaves with unread replies must not answer the next request."""
    from redis.exceptions import ResponseError

    key = "feed_ranking:{item_id=4444}:item_catalog_features"
    redis_client.set(key, "not a hash")
    try:
        with pytest.raises(ResponseError, match="WRONGTYPE"):
            fs.get_online_features(features=fs.get_feature_service("ranking"),
                                   entity_rows=[{"user_id": 1, "item_id": i} for i in (1001, 4444, 1002)])
    finally:
        redis_client.delete(key)
    for _ in range(3):
        got = fs.get_online_features(features=["item_embedding:item_embedding"],
                                     entity_rows=[{"item_id": 1001}]).to_dict()
        assert got["item_embedding"] == [latest(online_tables["item_embedding"], "item_id")[1001]["item_embedding"]]


@pytest.mark.parametrize("full_names", [False, True])
def test_the_servers_json_from_the_cells_is_feasts_conversion_of_the_proto(fs, online_tables, redis_client,
                                                                             full_names):
    """``response_dict`` builds the feature server's answer from the cells; it must be what
    Feast's ``convert_response_to_dict`` makes of the proto: statuses, timestamps, nulls, and
    non-finite floats as protobuf JSON's strings."""
    from feast.feature_server_utils import convert_response_to_dict
    from feast.protos.feast.types.Value_pb2 import FloatList, Value

    from feedstore.feast.online.response import _cells_json, response_dict
    from tests.feedstore.feast.online.conftest import write_at

    for seed, name in enumerate(("item_embedding", "item_engagement_features")):
        write_at(fs, name, [3041, 3042], now_us() - 7 * 60_000_000, seed=400 + seed)
    redis_client.hset("feed_ranking:{item_id=3041}:item_engagement_features", "freshness_score",
                      Value(double_val=float("nan")).SerializeToString())
    vec = Value(float_list_val=FloatList(val=[float("inf")] + [0.5] * 31)).SerializeToString()
    redis_client.hset("feed_ranking:{item_id=3042}:item_embedding", "item_embedding", vec)
    redis_client.hset("feed_ranking:{user_id=13}:user_embedding", "_ts", str(now_us() - 31 * HOUR_US))
    users, items = [13, 13, 999, 4, 4, 4], [1001, 1001, 1002, 77777, 3041, 3042]
    response = fs.get_online_features(
        features=fs.get_feature_service("ranking"), full_feature_names=full_names,
        include_feature_view_version_metadata=full_names,
        entity_rows=[{"user_id": u, "item_id": i} for u, i in zip(users, items)])
    assert response._entities is not None and _cells_json(response) is not None  # built from the cells
    got = response_dict(response)
    assert got == convert_response_to_dict(response.proto)
    names = got["metadata"]["feature_names"]
    freshness = "item_engagement_features__freshness_score" if full_names else "freshness_score"
    assert got["results"][names.index(freshness)]["values"][4] == "NaN"
    emb = "item_embedding__item_embedding" if full_names else "item_embedding"
    assert got["results"][names.index(emb)]["values"][5][0] == "Infinity"
    assert response_dict(response) == got  # again, after the decoded values were handed over


def test_reads_reuse_one_pooled_connection(fs, online_tables):
    """The read hands each view's replies over as they arrive; once every reply is read the
    connection goes back to the pool in step, whether or not the consumer resumed the reader
    after the last view (a reconnect per call would add the connection's handshake)."""
    client = private.redis_client(fs._get_provider().online_store, fs.config)
    rows = [{"user_id": 1, "item_id": i} for i in (1001, 1002, 1001)]
    fs.get_online_features(features=fs.get_feature_service("ranking"), entity_rows=rows).to_dict()
    before = client.client_id()  # the pool's one idle connection, as the server knows it
    for _ in range(3):
        fs.get_online_features(features=fs.get_feature_service("ranking"), entity_rows=rows).to_dict()
    assert client.client_id() == before
