"""The read half of ``TTLRedisOnlineStore``: every view's HMGETs in one round trip, a direct
``get_online_features`` path, and the TTL applied on read.

Feast's ``get_online_features`` turns every entity value into a proto, reads view by view, and
builds one ``Value`` object per cell of its response. Plain requests (views read by integer or
string join keys, no on-demand views or request data) skip all of that here: keys are built
from the Python values, one pipelined read fetches every view, and the response keeps the raw
cells (``response.CellOnlineResponse``): its proto is built only if someone reads it. Anything
else goes through Feast's path, whose per-view read hook (``_read_features_per_fv``) does the
same single pipelined read. Either way a value older than its view's TTL comes back as
``OUTSIDE_MAX_AGE`` (the key may outlive it when a TTL was shortened after the write), and
a malformed request is refused first with a one-line error (``requests``).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from feast import FeatureView, RepoConfig
from feast.online_response import OnlineResponse
from feast.protos.feast.serving.ServingService_pb2 import FieldStatus, GetOnlineFeaturesResponse
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.value_type import ValueType

from feedstore.feast import private
from feedstore.feast.online import codec, layout, wire
from feedstore.feast.online.requests import check_ids, check_join_keys, entity_columns, unresolved_features
from feedstore.feast.online.response import CellOnlineResponse, ViewCells, append_view

try:
    from feast.metrics import track_feature_statuses as _track_feature_statuses
except ImportError:  # metrics are optional in Feast
    _track_feature_statuses = None

PRESENT, NOT_FOUND, OUTSIDE_MAX_AGE = FieldStatus.PRESENT, FieldStatus.NOT_FOUND, FieldStatus.OUTSIDE_MAX_AGE

GroupedRefs = list[tuple[FeatureView, list[str]]]
KeyParts = Callable[[list], list[str]]
"""The key texts of one join-key column's values."""

_collector = threading.local()
"""While Feast's path runs in our ``get_online_features``: the views read, for ``to_dict``."""


class TTLRedisReads:
    """Feast's read methods for a store whose keys follow ``layout``; mixed in before Feast's
    ``RedisOnlineStore`` (whose client and, for other requests, ``get_online_features`` it uses)."""

    def online_read(
        self,
        config: RepoConfig,
        table: FeatureView,
        entity_keys: list[EntityKeyProto],
        requested_features: list[str] | None = None,
    ) -> list[tuple[datetime | None, dict[str, ValueProto] | None]]:
        """Feast's per-view read API (entity keys as protos), with the view's TTL applied."""
        view = layout.view_name(table, config)
        names = requested_features or [f.name for f in table.features]
        keys = [layout.redis_key(config.project, layout.entity_key_text(ek), view) for ek in entity_keys]
        fields = [n.encode() for n in names] + [layout.TS_FIELD]
        replies = wire.hmget(private.redis_client(self, config), [(fields, keys)])
        cutoff = layout.now_micros() - layout.ttl_micros(table) if table.ttl else None
        out: list[tuple[datetime | None, dict[str, ValueProto] | None]] = []
        for reply in replies:
            raw_ts = reply[-1]
            if raw_ts is None or (cutoff is not None and int(raw_ts) <= cutoff):
                out.append((None, None))
                continue
            out.append((codec.micros_to_datetime(int(raw_ts)),
                        {n: codec.parse_value(v) for n, v in zip(names, reply)}))
        return out

    async def online_read_async(self, config, table, entity_keys, requested_features=None):
        return await asyncio.to_thread(self.online_read, config, table, entity_keys, requested_features)

    def get_online_features(self, config: RepoConfig, features, entity_rows, registry, project: str,
                            full_feature_names: bool = False,
                            include_feature_view_version_metadata: bool = False) -> OnlineResponse:
        """Feast's method. Plain requests take the direct path, whose response converts the raw
        cells read here once per distinct entity; anything else goes through Feast's path (with
        the same reads, collected so ``to_dict`` converts cells the same way)."""
        columns, ctx = checked_request(registry, project, features, entity_rows, full_feature_names)
        plan = _plain_request(ctx, features, columns)
        if plan is not None:
            return read_plain(private.redis_client(self, config), config, columns, plan,
                              full_feature_names, include_feature_view_version_metadata)
        views: list[ViewCells] = []
        _collector.views = views
        try:
            response = super().get_online_features(
                config, features, entity_rows, registry, project, full_feature_names,
                include_feature_view_version_metadata)
        finally:
            _collector.views = None
        return CellOnlineResponse(private.response_feature_types(response), views, proto=response.proto)

    async def get_online_features_async(self, config: RepoConfig, features, entity_rows, registry, project: str,
                                        full_feature_names: bool = False,
                                        include_feature_view_version_metadata: bool = False) -> OnlineResponse:
        """Feast's method, after the same checks as the synchronous one."""
        checked_request(registry, project, features, entity_rows, full_feature_names)
        return await super().get_online_features_async(config, features, entity_rows, registry, project,
                                                       full_feature_names, include_feature_view_version_metadata)

    def _read_features_per_fv(
        self,
        config: RepoConfig,
        grouped_refs,
        join_key_values,
        entity_name_to_join_key_map,
        online_features_response: GetOnlineFeaturesResponse,
        full_feature_names: bool,
        include_feature_view_version_metadata: bool,
    ) -> None:
        """Feast's hook for its path (entity values as protos): the same pipelined read, the
        vectors appended to Feast's response as protobuf bytes."""
        views = read_views(private.redis_client(self, config), config, grouped_refs, join_key_values,
                           entity_name_to_join_key_map, _proto_key_parts, full_feature_names)
        for view in views:
            append_view(online_features_response, view, include_feature_view_version_metadata)
        collector = getattr(_collector, "views", None)
        if collector is not None:
            collector.extend(views)

    async def _read_features_per_fv_async(self, config, grouped_refs, join_key_values,
                                          entity_name_to_join_key_map, online_features_response,
                                          full_feature_names, include_feature_view_version_metadata) -> None:
        await asyncio.to_thread(
            self._read_features_per_fv, config, grouped_refs, join_key_values, entity_name_to_join_key_map,
            online_features_response, full_feature_names, include_feature_view_version_metadata,
        )


# ---- the direct path -----------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class PlainPlan:
    """What the direct path needs from Feast's request resolution."""

    grouped_refs: GroupedRefs
    entity_name_to_join_key_map: dict[str, str]
    entity_type_map: dict[str, ValueType]


def read_plain(client, config: RepoConfig, columns: dict[str, list], plan: PlainPlan, full_feature_names: bool,
               include_version: bool) -> OnlineResponse:
    """The direct path: keys from the Python values, one round trip, the raw cells kept."""
    started = time.monotonic()
    feature_types = private.build_feature_types(plan.grouped_refs)
    views = read_views(client, config, plan.grouped_refs, columns, plan.entity_name_to_join_key_map,
                       layout.key_parts, full_feature_names, feature_types)
    _track_read(started)
    entities = {k: (v, plan.entity_type_map[k]) for k, v in columns.items()}
    return CellOnlineResponse(feature_types, views, entities=entities, include_version=include_version)


_INT64 = (-(2**63), 2**63 - 1)


def _plain_column(values: list, value_type: ValueType | None) -> bool:
    """Values the direct path keys exactly as Feast's proto conversion would (else Feast's path)."""
    if value_type == ValueType.INT64:
        return set(map(type, values)) == {int} and _INT64[0] <= min(values) and max(values) <= _INT64[1]
    if value_type == ValueType.STRING:
        return set(map(type, values)) == {str}
    return False


def checked_request(registry, project: str, features, entity_rows, full_feature_names: bool,
                    ) -> tuple[dict[str, list], private.RequestContext | None]:
    """The request's entity columns and Feast's resolution of its features, once both are known
    to be right (else a one-line ``RequestError``); the context is ``None`` when Feast cannot
    resolve the features and the reason is Feast's to tell (an unknown view, say)."""
    columns = entity_columns(entity_rows)
    try:
        ctx = private.request_context(registry, project, features, full_feature_names)
    except Exception:  # noqa: BLE001 - Feast's path raises its own error for the same request
        error = unresolved_features(registry, project, features)
        if error is not None:
            raise error from None
        return columns, None
    check_join_keys(ctx, columns)
    check_ids(columns, ctx.entity_type_map)
    return columns, ctx


def _plain_request(ctx: private.RequestContext | None, features, columns: dict[str, list]) -> PlainPlan | None:
    """Feast's cached request resolution, when the request needs nothing but feature view reads
    (``columns`` are checked: equally long, not empty)."""
    if ctx is None:
        return None
    if ctx.on_demand_views or ctx.request_data or ctx.entityless or getattr(features, "precompute_online", False):
        return None
    if any(k not in ctx.join_keys or not _plain_column(v, ctx.entity_type_map.get(k)) for k, v in columns.items()):
        return None
    return PlainPlan(ctx.grouped_refs, ctx.entity_name_to_join_key_map, ctx.entity_type_map)


def _track_read(started: float) -> None:
    if private.online_read_metrics_enabled():
        from feast.metrics import track_online_store_read

        track_online_store_read(time.monotonic() - started)


# ---- both paths ----------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class _ViewRead:
    """One view's share of the pipelined read: its distinct entities are ``keys[start:start + count]``."""

    table: FeatureView
    requested: list[str]
    order: list[int] | None
    output_len: int
    start: int
    count: int


def read_views(client, config: RepoConfig, grouped_refs, join_key_values, entity_name_to_join_key_map,
               key_parts: KeyParts, full_feature_names: bool,
               decode_types: dict[str, ValueType] | None = None) -> list[ViewCells]:
    """Every view's HMGETs in one pipeline; per view the raw cells of each distinct entity, and
    with ``decode_types`` their Python values too, converted while later views are in flight."""
    work: list[_ViewRead] = []
    keys: list[bytes] = []
    texts: dict = {}
    prefix = layout.key_prefix(config.project)
    for table, requested in grouped_refs:
        entities, order, output_len = _unique_entities(
            table, join_key_values, entity_name_to_join_key_map, texts, key_parts)
        suffix = layout.key_suffix(layout.view_name(table, config))
        work.append(_ViewRead(table, list(requested), order, output_len, len(keys), len(entities)))
        keys.extend([f"{prefix}{e}{suffix}".encode() for e in entities])
    if not work:
        return []
    groups = wire.hmget_groups(client, [([n.encode() for n in w.requested] + [layout.TS_FIELD],
                                         keys[w.start:w.start + w.count]) for w in work])
    now = layout.now_micros()
    views = []
    for w, replies in zip(work, groups):  # each view's cells while Redis answers the next view
        view = _view_cells(w.table, w.requested, replies, w.order, w.output_len, now, full_feature_names)
        if decode_types is not None:
            view.decode(decode_types)
        views.append(view)
    return views


def _proto_key_parts(values: list[ValueProto]) -> list[str]:
    return [layout.key_part(layout.proto_value(v)) for v in values]


def _view_cells(table: FeatureView, requested: list[str], replies: list, order: list[int] | None,
                output_len: int, now: int, full_feature_names: bool) -> ViewCells:
    """One view's replies as columns of raw cells per distinct entity, with statuses and event
    times; a value past the view's TTL is ``OUTSIDE_MAX_AGE`` and its cells are dropped."""
    ttl = layout.ttl_micros(table)
    cutoff = now - ttl if ttl else None
    status, ts, live = _all_live(replies, cutoff) or _sorted_out(replies, cutoff, len(requested))
    columns = list(zip(*live))[:-1] if live else [()] * len(requested)
    table_name = table.projection.name_to_use()
    names = [f"{table_name}__{f}" if full_feature_names else f for f in requested]
    if _track_feature_statuses is not None:
        present = status.count(PRESENT)
        if order is not None and present != len(status):  # rows, not distinct entities
            present = sum(status[u] == PRESENT for u in order)
        elif order is not None:
            present = output_len
        _track_feature_statuses(table.name, present * len(requested), len(requested) * (output_len - present))
    return ViewCells(
        names=names, columns=columns, status=status, ts=ts, order=order, output_len=output_len,
        meta_name=table.projection.name_alias or table.projection.name,
        version=getattr(table, "current_version_number", 0) or 0)


def _all_live(replies: list, cutoff: int | None) -> tuple[list[int], list[int], list] | None:
    """Statuses, event times and replies when every entity was found within the TTL (the common
    case, checked per column rather than per reply), else ``None``."""
    raw = [reply[-1] for reply in replies]
    if None in raw:
        return None
    ts = list(map(int, raw))
    if cutoff is not None and ts and min(ts) <= cutoff:
        return None
    return [PRESENT] * len(replies), ts, replies


def _sorted_out(replies: list, cutoff: int | None, n_features: int) -> tuple[list[int], list[int], list]:
    """Per reply: ``NOT_FOUND`` without an event time, ``OUTSIDE_MAX_AGE`` (cells dropped) at or
    past the cutoff, else ``PRESENT`` with its event time (0 when not present)."""
    status = [NOT_FOUND] * len(replies)
    ts = [0] * len(replies)
    absent = (None,) * (n_features + 1)
    live = list(replies)
    for u, reply in enumerate(replies):
        raw_ts = reply[-1]
        if raw_ts is None:
            continue
        t = int(raw_ts)
        if cutoff is not None and t <= cutoff:
            status[u] = OUTSIDE_MAX_AGE
            live[u] = absent
            continue
        status[u] = PRESENT
        ts[u] = t
    return status, ts, live


def _unique_entities(table: FeatureView, join_key_values, entity_name_to_join_key_map,
                     texts: dict, key_parts: KeyParts = _proto_key_parts,
                     ) -> tuple[list[str], list[int] | None, int]:
    """Feast's ``_get_unique_entities`` as entity texts: the distinct entities of a view, and for
    each output row the index of its entity (``None`` when every row is distinct). ``texts``
    caches, across the views of one call, each key column's texts and each key set's result."""
    values = private.table_entity_values(table, entity_name_to_join_key_map, join_key_values)
    expected = set(entity_name_to_join_key_map.values()) - {"__dummy_id"}
    if any(k not in values or not values[k] for k in expected) and not any(values.values()):
        raise KeyError(f"Missing join key values for keys: {sorted(k for k in expected if k not in values)}. "
                       f"Provided join_key_values: {list(join_key_values)}")
    names = list(values)
    if not names:
        return [], None, 0
    done_key = (tuple(names), tuple(id(values[n]) for n in names))
    done = texts.get(done_key)
    if done is None:
        done = texts[done_key] = _distinct(names, values, texts, key_parts)
    return done


def _distinct(names: list[str], values: dict, texts: dict,
              key_parts: KeyParts) -> tuple[list[str], list[int] | None, int]:
    columns = []
    for name in names:
        column = values[name]
        cached = texts.get(id(column))
        if cached is None:
            cached = texts[id(column)] = key_parts(column)
        columns.append(cached)
    if len(names) == 1:
        head = names[0] + "="
        row_texts = [head + t for t in columns[0]]
    else:
        row_texts = [layout.entity_text(names, parts) for parts in zip(*columns)]
    first: dict[str, int] = {}
    order = [first.setdefault(t, len(first)) for t in row_texts]
    if len(first) == len(order):
        return row_texts, None, len(order)
    return list(first), order, len(order)
