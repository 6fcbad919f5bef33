"""Every private Feast API this package relies on, each behind one small named function.

Our stores reach past Feast's public surface where it has none for what we need (the cached
request resolution, the versioned view name, a response's type map, metrics flags...). Feast
can change any of these in a minor release; keeping them here means an upgrade breaks one
module, and ``tests/feedstore/feast/test_private.py`` checks the shape we rely on (signatures,
tuple arity, attributes), so it fails in one obvious place with a message naming what changed.

Nothing else in ``feedstore`` imports a private Feast name. Hooks we override by name
(their callers are Feast's, so the names cannot move here) are checked there as well:

* ``OnlineStore._read_features_per_fv`` / ``_read_features_per_fv_async``: the per-request read
  that ``OnlineStore.get_online_features`` delegates to (``feedstore.feast.online.read``);
* ``LocalComputeEngine._materialize_one``: one materialization task (``feedstore.feast.engine``);
* ``RetrievalJob._to_arrow_internal`` / ``_to_df_internal``: the abstract execution hooks of a
  retrieval job (``feedstore.feast.offline.asof``).
"""

from __future__ import annotations

import functools
import types
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from feast import FeatureService, FeatureView, RepoConfig
    from feast.infra.common.materialization_job import MaterializationJob, MaterializationTask
    from feast.infra.compute_engines.feature_builder import FeatureBuilder
    from feast.infra.compute_engines.local.compute import LocalComputeEngine
    from feast.infra.online_stores.redis import RedisOnlineStore
    from feast.infra.registry.base_registry import BaseRegistry
    from feast.online_response import OnlineResponse
    from feast.value_type import ValueType


# ---- online reads --------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class RequestContext:
    """``feast.utils._get_cached_request_context``'s 9-tuple, by name (its order is Feast's)."""

    feature_refs: list[str]
    on_demand_views: list
    entity_name_to_join_key_map: dict[str, str]
    entity_type_map: dict[str, ValueType]
    join_keys: set[str]
    grouped_refs: list[tuple[FeatureView, list[str]]]
    requested_result_row_names: frozenset[str]
    request_data: Any
    entityless: bool


REQUEST_CONTEXT_ARITY = len(fields(RequestContext))


def request_context(registry: BaseRegistry, project: str, features: list[str] | FeatureService,
                    full_feature_names: bool) -> RequestContext:
    """Feast's resolution of a request's features (cached per registry refresh), the same one its
    own ``get_online_features`` starts from, so both read paths agree on views and join keys."""
    from feast import utils

    ctx = utils._get_cached_request_context(registry, project, features, full_feature_names)
    return RequestContext(*ctx[:REQUEST_CONTEXT_ARITY])


def table_entity_values(table: FeatureView, entity_name_to_join_key_map: dict[str, str],
                        join_key_values: dict[str, list]) -> dict[str, list]:
    """The join-key columns one view reads, renamed through its projection's join-key map (the
    first step of Feast's ``_get_unique_entities``)."""
    from feast import utils

    return utils._get_table_entity_values(table, entity_name_to_join_key_map, join_key_values)


def versioned_view_name(table: FeatureView, config: RepoConfig) -> str:
    """The view name Feast's Redis store keys on (``name@vN`` when online versioning is on)."""
    from feast.infra.online_stores.redis import _versioned_fv_name

    return _versioned_fv_name(table, config)


def redis_client(store: RedisOnlineStore, config: RepoConfig) -> Any:
    """Feast's Redis store's client (one per store, created on first use from the config): a
    ``Redis``, a ``RedisCluster`` or a Sentinel master."""
    return store._get_client(config.online_store)


def build_feature_types(grouped_refs: Sequence[tuple[FeatureView, Sequence[str]]]) -> dict[str, ValueType]:
    """The name -> ``ValueType`` map Feast's ``get_online_features`` hands its response (bare and
    ``view__feature`` names)."""
    from feast.infra.online_stores.online_store import OnlineStore

    return OnlineStore._build_feature_types(grouped_refs)


def response_feature_types(response: OnlineResponse) -> dict[str, ValueType]:
    """The type map an ``OnlineResponse`` converts with (no public accessor)."""
    return response._feature_types


def set_response_feature_types(response: OnlineResponse, feature_types: dict[str, ValueType]) -> None:
    """What ``OnlineResponse.__init__`` stores, for a subclass that does not run it."""
    response._feature_types = feature_types


# ---- metrics -------------------------------------------------------------------------------

def metrics_flags() -> Any | None:
    """``feast.metrics._config``: which metric families the feature server turned on; ``None``
    when this Feast has no metrics. Read at each call (the server replaces the object)."""
    try:
        from feast.metrics import _config
    except ImportError:
        return None
    return _config


def online_read_metrics_enabled() -> bool:
    flags = metrics_flags()
    return bool(flags is not None and flags.online_features)


def audit_logging_enabled() -> bool:
    flags = metrics_flags()
    return bool(flags is not None and flags.audit_logging)


def resolve_feature_counts(features: list[str] | FeatureService) -> tuple[str, str]:
    """``(feature count, feature view count)`` as the labels Feast's handler gives its request
    metrics."""
    from feast.feature_server import _resolve_feature_counts

    return _resolve_feature_counts(features)


# ---- offline -------------------------------------------------------------------------------

def write_data_source(table: Any, data_source: Any, repo_path: str, mode: str = "append",
                      allow_overwrite: bool = False) -> None:
    """Feast's DuckDB store's writer of an ibis table into a data source (what its own retrieval
    jobs' ``persist`` uses), so our jobs persist the same files as stock."""
    from feast.infra.offline_stores.duckdb import _write_data_source

    _write_data_source(table, data_source, repo_path, mode, allow_overwrite)


# ---- compute engine ------------------------------------------------------------------------

def should_dedupe(builder: FeatureBuilder, view: FeatureView) -> bool:
    """Whether Feast's plan keeps only the newest row per entity for this task."""
    return builder._should_dedupe(view)


@functools.cache
def _materialize_one_with(builder: type) -> Callable[..., MaterializationJob]:
    """``LocalComputeEngine._materialize_one`` with ``builder`` where it names
    ``LocalFeatureBuilder``: the same code object, its module globals with that one name bound
    to ours (the method takes no builder argument, and copying its body would drift from it)."""
    from feast.infra.compute_engines.local.compute import LocalComputeEngine

    parent = LocalComputeEngine._materialize_one
    scope = {**parent.__globals__, "LocalFeatureBuilder": builder}
    method = types.FunctionType(parent.__code__, scope, parent.__name__, parent.__defaults__, parent.__closure__)
    method.__kwdefaults__ = parent.__kwdefaults__
    return method


def materialize_one(engine: LocalComputeEngine, registry: BaseRegistry, task: MaterializationTask,
                    builder: type, **kwargs: Any) -> MaterializationJob:
    """Feast's local materialization of one task, its plan built by ``builder`` (a
    ``LocalFeatureBuilder`` subclass); errors come back in the job, as Feast's do."""
    return _materialize_one_with(builder)(engine, registry, task, **kwargs)
