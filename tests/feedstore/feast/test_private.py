"""The shape of every private Feast API ``feedstore.feast.private`` wraps, and of the hooks our
stores override by name: a Feast upgrade that changes one fails here, naming what changed."""

from __future__ import annotations

import inspect
from datetime import timedelta
from types import CodeType

import pytest
from feast import Entity, FeatureView, Field, FileSource
from feast.online_response import OnlineResponse
from feast.protos.feast.serving.ServingService_pb2 import GetOnlineFeaturesResponse
from feast.types import Int64
from feast.value_type import ValueType

from feedstore.feast import private


def _parameters(function) -> list[str]:
    return list(inspect.signature(function).parameters)


def _names(code: CodeType) -> set[str]:
    """Every global and attribute name a function's code uses, comprehensions included."""
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, CodeType):
            names |= _names(const)
    return names


def _assert_parameters(function, expected: list[str]) -> None:
    got = _parameters(function)
    assert got == expected, f"{function.__module__}.{function.__qualname__} now takes {got}, we call it with {expected}"


@pytest.fixture()
def view() -> FeatureView:
    user = Entity(name="user", join_keys=["user_id"])
    source = FileSource(name="v_source", path="v.parquet", timestamp_field="ts")
    return FeatureView(name="v", entities=[user], ttl=timedelta(hours=1), source=source,
                       schema=[Field(name="user_id", dtype=Int64), Field(name="x", dtype=Int64)])


# ---- online reads --------------------------------------------------------------------------

def test_cached_request_context_is_the_nine_tuple_we_name(fs):
    from feast import utils

    _assert_parameters(utils._get_cached_request_context, ["registry", "project", "features", "full_feature_names"])
    raw = utils._get_cached_request_context(fs.registry, fs.project, fs.get_feature_service("ranking"), False)
    assert isinstance(raw, tuple) and len(raw) == private.REQUEST_CONTEXT_ARITY, \
        f"_get_cached_request_context returns {len(raw)} items; RequestContext names {private.REQUEST_CONTEXT_ARITY}"
    ctx = private.request_context(fs.registry, fs.project, fs.get_feature_service("ranking"), False)
    assert all(isinstance(r, str) and ":" in r for r in ctx.feature_refs), ctx.feature_refs
    assert ctx.on_demand_views == []
    assert {"user": "user_id", "item": "item_id"}.items() <= ctx.entity_name_to_join_key_map.items()
    assert ctx.entity_type_map["user_id"] == ValueType.INT64
    assert {"user_id", "item_id"} <= set(ctx.join_keys)
    assert all(isinstance(table, FeatureView) and all(isinstance(f, str) for f in features)
               for table, features in ctx.grouped_refs), ctx.grouped_refs
    assert isinstance(ctx.requested_result_row_names, frozenset) and "user_embedding" in ctx.requested_result_row_names
    assert not ctx.request_data
    assert ctx.entityless is False


def test_table_entity_values_renames_through_the_projection(view):
    from feast import utils

    _assert_parameters(utils._get_table_entity_values,
                       ["table", "entity_name_to_join_key_map", "join_key_proto_values"])
    aliased = view.with_join_key_map({"user_id": "viewer"})
    got = private.table_entity_values(aliased, {"user": "user_id"}, {"viewer": [1, 2], "item_id": [3, 4]})
    assert got == {"user_id": [1, 2]}


def test_versioned_view_name(view, fs):
    from feast.infra.online_stores import redis

    _assert_parameters(redis._versioned_fv_name, ["table", "config"])
    assert private.versioned_view_name(view, fs.config) == "v"


def test_redis_store_client(fs):
    from feast.infra.online_stores.redis import RedisOnlineStore
    from redis import Redis

    _assert_parameters(RedisOnlineStore._get_client, ["self", "online_store_config"])
    store = fs._get_provider().online_store
    assert isinstance(private.redis_client(store, fs.config), Redis)
    assert private.redis_client(store, fs.config) is private.redis_client(store, fs.config)  # one per store


def test_build_feature_types(view):
    from feast.infra.online_stores.online_store import OnlineStore

    assert isinstance(inspect.getattr_static(OnlineStore, "_build_feature_types"), staticmethod)
    _assert_parameters(OnlineStore._build_feature_types, ["grouped_refs"])
    assert private.build_feature_types([(view, ["x"])]) == {"x": ValueType.INT64, "v__x": ValueType.INT64}


def test_online_response_keeps_its_types_in_feature_types():
    """``CellOnlineResponse`` does not run ``OnlineResponse.__init__``: it sets what that sets."""
    response = OnlineResponse(GetOnlineFeaturesResponse(), feature_types={"x": ValueType.INT64})
    assert set(vars(response)) == {"proto", "_feature_types"}, f"OnlineResponse now sets {sorted(vars(response))}"
    assert private.response_feature_types(response) == {"x": ValueType.INT64}
    private.set_response_feature_types(response, {"y": ValueType.STRING})
    assert private.response_feature_types(response) == {"y": ValueType.STRING}


def test_the_read_hooks_our_store_overrides():
    from feast.infra.online_stores.online_store import OnlineStore

    from feedstore.feast.online.read import TTLRedisReads
    from feedstore.feast.online.store import TTLRedisOnlineStore

    hook = ["self", "config", "grouped_refs", "join_key_values", "entity_name_to_join_key_map",
            "online_features_response", "full_feature_names", "include_feature_view_version_metadata"]
    _assert_parameters(OnlineStore._read_features_per_fv, hook)
    _assert_parameters(OnlineStore._read_features_per_fv_async, hook)
    assert "_read_features_per_fv" in _names(OnlineStore.get_online_features.__code__), \
        "OnlineStore.get_online_features no longer reads through _read_features_per_fv"
    assert "_read_features_per_fv_async" in _names(OnlineStore.get_online_features_async.__code__)
    assert TTLRedisOnlineStore._read_features_per_fv is TTLRedisReads._read_features_per_fv  # ours, not Redis'


# ---- metrics -------------------------------------------------------------------------------

def test_metrics_flags():
    import feast.metrics

    assert private.metrics_flags() is feast.metrics._config
    for flag in ("online_features", "audit_logging"):
        assert isinstance(getattr(feast.metrics._config, flag), bool), f"feast.metrics._config.{flag} is gone"
    assert private.online_read_metrics_enabled() is feast.metrics._config.online_features
    assert private.audit_logging_enabled() is feast.metrics._config.audit_logging


def test_resolve_feature_counts():
    from feast import feature_server

    _assert_parameters(feature_server._resolve_feature_counts, ["features"])
    assert private.resolve_feature_counts(["a:x", "a:y", "b:z"]) == ("3", "2")


# ---- offline -------------------------------------------------------------------------------

def test_duckdb_write_data_source():
    from feast.infra.offline_stores import duckdb

    signature = inspect.signature(duckdb._write_data_source)
    assert list(signature.parameters) == ["table", "data_source", "repo_path", "mode", "allow_overwrite"], signature
    assert signature.parameters["mode"].default == "append" and signature.parameters["allow_overwrite"].default is False


def test_the_retrieval_job_hooks_our_job_implements():
    from feast.infra.offline_stores.offline_store import RetrievalJob

    _assert_parameters(RetrievalJob._to_arrow_internal, ["self", "timeout"])
    _assert_parameters(RetrievalJob._to_df_internal, ["self", "timeout"])
    assert "_to_arrow_internal" in _names(RetrievalJob.to_arrow.__code__)


# ---- compute engine ------------------------------------------------------------------------

def test_should_dedupe():
    from feast.infra.compute_engines.feature_builder import FeatureBuilder

    _assert_parameters(FeatureBuilder._should_dedupe, ["self", "view"])


def test_materialize_one_names_its_builder_as_a_global():
    """``private.materialize_one`` runs Feast's own code with ``LocalFeatureBuilder`` bound to ours."""
    from feast.infra.compute_engines.base import ComputeEngine
    from feast.infra.compute_engines.local.compute import LocalComputeEngine

    from feedstore.feast.engine import ArrowFeatureBuilder

    parent = LocalComputeEngine._materialize_one
    _assert_parameters(parent, ["self", "registry", "task", "kwargs"])
    assert "_materialize_one" in _names(ComputeEngine.materialize.__code__), \
        "ComputeEngine.materialize no longer runs each task through _materialize_one"
    assert "LocalFeatureBuilder" in parent.__code__.co_names and parent.__closure__ is None, \
        "LocalComputeEngine._materialize_one no longer names LocalFeatureBuilder as a module global"
    ours = private._materialize_one_with(ArrowFeatureBuilder)
    assert ours.__code__ is parent.__code__ and ours.__globals__["LocalFeatureBuilder"] is ArrowFeatureBuilder
