"""Feast's Redis online store with a TTL per feature view.

Stock Feast keeps every view of an entity in one hash and can only expire the whole hash
(``key_ttl_seconds``); ``FeatureView.ttl`` is ignored online. Here each (entity, view) is its
own hash, ``<project>:{<join_key>=<value>}:<view>``, with fields ``_ts`` (event time, epoch
µs) and one field per feature holding the serialised ``ValueProto`` exactly as Feast writes it.

* expiry: the key expires at event time + the view's TTL (``PEXPIREAT``); a read also drops
  any value older than the TTL (status ``OUTSIDE_MAX_AGE``), so a value past its TTL is never
  served even if the TTL was shortened after it was written;
* newer wins, as in Feast: a Lua script writes a row only when its event time is later than
  the stored one, atomically, in one round trip;
* the hash tag ``{...}`` puts all views of an entity in one Redis Cluster slot.

Selected in ``feature_store.yaml`` with ``type: feedstore.feast.online.store.TTLRedisOnlineStore``.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, NoReturn

import numpy as np
import pyarrow as pa
import structlog
from feast import Entity, FeatureView, RepoConfig
from feast.infra.online_stores.redis import RedisOnlineStore, RedisOnlineStoreConfig
from feast.online_response import OnlineResponse
from feast.protos.feast.serving.ServingService_pb2 import FieldStatus, GetOnlineFeaturesResponse
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.value_type import ValueType
from pydantic import field_validator
from redis.exceptions import NoScriptError

from feedstore.feast import private
from feedstore.feast.online import codec, wire
from feedstore.feast.online import response as response_module

try:
    from feast.metrics import track_feature_statuses as _track_feature_statuses
except ImportError:  # metrics are optional in Feast
    _track_feature_statuses = None

_collector = threading.local()
"""While Feast's path runs in our ``get_online_features``: the views read, for ``to_dict``."""

log = structlog.get_logger(__name__)

TS_FIELD = b"_ts"
PRESENT, NOT_FOUND, OUTSIDE_MAX_AGE = FieldStatus.PRESENT, FieldStatus.NOT_FOUND, FieldStatus.OUTSIDE_MAX_AGE

WRITE_SCRIPT = b"""
local nf = tonumber(ARGV[1])
local args = {'_ts', 0}
for j = 1, nf do args[1 + 2 * j] = ARGV[1 + j] end
local pos, written = 2 + nf, 0
for i, key in ipairs(KEYS) do
  local cur = redis.call('HGET', key, '_ts')
  if not cur or tonumber(cur) < tonumber(ARGV[pos]) then
    args[2] = ARGV[pos]
    for j = 1, nf do args[2 + 2 * j] = ARGV[pos + 1 + j] end
    redis.call('HSET', key, unpack(args))
    if tonumber(ARGV[pos + 1]) > 0 then redis.call('PEXPIREAT', key, ARGV[pos + 1]) else redis.call('PERSIST', key) end
    written = written + 1
  end
  pos = pos + 2 + nf
end
return written
"""
"""Rows ``KEYS[i]``; ``ARGV``: field count, field names, then per row event time (µs), expiry
(epoch ms, 0 = none) and the values. A row is written only when newer than the stored one."""

class TTLRedisOnlineStoreConfig(RedisOnlineStoreConfig):
    """Feast's Redis settings (``connection_string``, ``redis_type``...) plus write tuning."""

    type: Literal["feedstore.feast.online.store.TTLRedisOnlineStore"] = (  # type: ignore[assignment]
        "feedstore.feast.online.store.TTLRedisOnlineStore"
    )
    write_chunk_rows: int = 5_000
    """Rows per pipelined round trip when writing Arrow tables."""
    write_workers: int = 2
    """Threads writing chunks concurrently (encoding overlaps the round trips)."""
    write_rows_per_call: int = 200
    """Rows per newer-wins script call on a single Redis (fewer replies, less per-call work)."""

    @field_validator("connection_string")
    @classmethod
    def _substituted(cls, value: str) -> str:
        """``feature_store.yaml`` names its endpoints as ``${FEED_FEAST_…}``, which Feast leaves as
        they are when unset; say so here, before Feast fails deep in SQLAlchemy's URL parser."""
        if "${" in value:
            unset_environment(value)
        return value


def unset_environment(value: str) -> NoReturn:
    message = (f"{value.strip('${}')} is not set: feature_store.yaml takes its endpoints from the environment. "
               'Run `./run feast …` (or `feedstore feast …`), or eval "$(./run stack env)" first.')
    if Path(sys.argv[0]).name == "feast":
        # The feast CLI prints any exception as a traceback; a user who forgot the environment gets one line.
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(2)
    raise ValueError(message)


def ttl_micros(view: FeatureView) -> int:
    """0 means no TTL, as in Feast."""
    ttl = view.ttl
    return int(ttl.total_seconds() * 1_000_000) if ttl else 0


def _now_micros() -> int:
    return time.time_ns() // 1000


def view_name(view: FeatureView, config: RepoConfig) -> str:
    return private.versioned_view_name(view, config)


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


class TTLRedisOnlineStore(RedisOnlineStore):
    _script_sha: bytes | None = None

    # ---- writes ------------------------------------------------------------------------

    def _sha(self, client) -> bytes:
        if self._script_sha is None:
            sha = client.script_load(WRITE_SCRIPT)
            self._script_sha = sha.encode() if isinstance(sha, str) else sha
        return self._script_sha

    def _send_rows(self, client, keys: list[bytes], ts: list[bytes], exp: list[bytes],
                   columns: list[tuple[bytes, list[bytes]]], rows_per_call: int = 200) -> int:
        """Newer-wins writes, ``rows_per_call`` rows per script call on a single Redis (one per
        call on a cluster, where one call's keys must share a slot); returns rows written."""
        if not keys:
            return 0
        names = [name for name, _ in columns]
        replies = wire.evalsha_rows(client, self._sha(client), keys, [b"%d" % len(names), *names],
                                    [ts, exp, *(values for _, values in columns)], rows_per_call)
        errors = [r for r in replies if isinstance(r, Exception)]
        if errors:
            if any(isinstance(e, NoScriptError) for e in errors):
                self._script_sha = None  # server restarted or flushed scripts; rows are idempotent
                return self._send_rows(client, keys, ts, exp, columns, rows_per_call)
            raise errors[0]
        return sum(int(r) for r in replies)

    def online_write_batch(
        self,
        config: RepoConfig,
        table: FeatureView,
        data: list[tuple[EntityKeyProto, dict[str, ValueProto], datetime, datetime | None]],
        progress: Callable[[int], Any] | None,
    ) -> None:
        """Feast's row-of-protos write (``push``, stock materialization), with per-view expiry."""
        client = private.redis_client(self, config)
        view = view_name(table, config)
        ttl = ttl_micros(table)
        now = _now_micros()
        groups: dict[tuple[str, ...], list[tuple[bytes, int, dict[str, ValueProto]]]] = {}
        for entity_key, values, event_ts, _ in data:
            ts = codec.datetime_to_micros(event_ts)
            if ttl and ts + ttl <= now:
                continue  # already past its TTL: never served, so never written
            key = codec.redis_key(config.project, self._entity_text(entity_key), view)
            groups.setdefault(tuple(values), []).append((key, ts, values))
        for names, rows in groups.items():
            self._send_rows(
                client,
                [k for k, _, _ in rows],
                [str(ts).encode() for _, ts, _ in rows],
                [str((ts + ttl) // 1000 if ttl else 0).encode() for _, ts, _ in rows],
                [(n.encode(), [v[n].SerializeToString() for _, _, v in rows]) for n in names],
            )
        if progress:
            progress(len(data))

    async def online_write_batch_async(self, config, table, data, progress) -> None:
        """The sync path in a worker thread: one code path for the dedup and expiry rules."""
        import asyncio

        await asyncio.to_thread(self.online_write_batch, config, table, data, progress)

    def write_arrow(self, config: RepoConfig, table: FeatureView, data: pa.Table,
                    progress: Callable[[int], Any] | None = None) -> int:
        """Columnar write of an Arrow table holding the join keys, the view's timestamp field
        and its features (as the offline store returns them); returns rows written."""
        store_config: TTLRedisOnlineStoreConfig = config.online_store
        client = private.redis_client(self, config)
        self._sha(client)
        join_keys = [e.name for e in table.entity_columns]
        ts_field = table.batch_source.timestamp_field
        features = [(f.name, f.dtype.to_value_type()) for f in table.features]
        view = view_name(table, config)
        ttl = ttl_micros(table)
        prefix, suffix = codec.key_prefix(config.project), codec.key_suffix(view)

        def write_chunk(chunk: pa.Table) -> int:
            ts = codec.to_micros(chunk.column(ts_field))
            if ttl:
                live = ts + ttl > _now_micros()
                if not live.all():
                    chunk, ts = chunk.filter(pa.array(live)), ts[live]
            if chunk.num_rows == 0:
                return 0
            keys = [f"{prefix}{e}{suffix}".encode() for e in codec.entity_texts(chunk, join_keys)]
            exp = ts // 1000 + ttl // 1000 if ttl else np.zeros_like(ts)
            written = self._send_rows(
                client, keys, [str(t).encode() for t in ts.tolist()], [str(e).encode() for e in exp.tolist()],
                [(name.encode(), codec.encode_column(chunk.column(name), vt)) for name, vt in features],
                store_config.write_rows_per_call,
            )
            if progress:
                progress(chunk.num_rows)
            return written

        chunks = _slices(data, store_config.write_chunk_rows)
        workers = max(1, store_config.write_workers)
        if workers == 1:
            return sum(map(write_chunk, chunks))
        with ThreadPoolExecutor(workers, thread_name_prefix="redis-write") as pool:
            return sum(pool.map(write_chunk, chunks))

    # ---- reads -------------------------------------------------------------------------

    @staticmethod
    def _entity_text(entity_key: EntityKeyProto) -> str:
        return codec.entity_text(entity_key.join_keys, [codec.proto_value(v) for v in entity_key.entity_values])

    def _hmget(self, config: RepoConfig, keys: list[bytes], fields: list[bytes]) -> list:
        return wire.hmget(private.redis_client(self, config), [(fields, keys)])

    def online_read(
        self,
        config: RepoConfig,
        table: FeatureView,
        entity_keys: list[EntityKeyProto],
        requested_features: list[str] | None = None,
    ) -> list[tuple[datetime | None, dict[str, ValueProto] | None]]:
        view = view_name(table, config)
        names = requested_features or [f.name for f in table.features]
        keys = [codec.redis_key(config.project, self._entity_text(ek), view) for ek in entity_keys]
        replies = self._hmget(config, keys, [n.encode() for n in names] + [TS_FIELD])
        cutoff = _now_micros() - ttl_micros(table) if table.ttl else None
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
        import asyncio

        return await asyncio.to_thread(self.online_read, config, table, entity_keys, requested_features)

    def get_online_features(self, config: RepoConfig, features, entity_rows, registry, project: str,
                            full_feature_names: bool = False,
                            include_feature_view_version_metadata: bool = False) -> OnlineResponse:
        """Feast's method. Plain requests (views read by integer or string join keys, no
        on-demand views or request data) take a direct path whose response builds its proto only
        when asked for it: ``to_dict`` converts the raw cells read here, once per distinct
        entity. Anything else goes through Feast's path, with the same reads."""
        columns = _columnar(entity_rows)
        plan = _plain_request(registry, project, features, full_feature_names, columns)
        if plan is not None:
            return self._read_plain(config, columns, *plan, full_feature_names,
                                    include_feature_view_version_metadata)
        views: list[response_module.ViewCells] = []
        _collector.views = views
        try:
            response = super().get_online_features(
                config, features, entity_rows, registry, project, full_feature_names,
                include_feature_view_version_metadata)
        finally:
            _collector.views = None
        return response_module.CellOnlineResponse(private.response_feature_types(response), views, proto=response.proto)

    def _read_plain(self, config: RepoConfig, columns: dict[str, list], grouped_refs, entity_name_to_join_key_map,
                    entity_type_map, full_feature_names: bool, include_version: bool) -> OnlineResponse:
        started = time.monotonic()
        views = self._read_views(config, grouped_refs, columns, entity_name_to_join_key_map, codec.key_part,
                                 full_feature_names)
        _track_read(started)
        entities = {k: (v, entity_type_map[k]) for k, v in columns.items()}
        return response_module.CellOnlineResponse(private.build_feature_types(grouped_refs), views, entities=entities,
                                                  include_version=include_version)

    def _read_views(self, config: RepoConfig, grouped_refs, join_key_values, entity_name_to_join_key_map,
                    key_part: Callable[[Any], str], full_feature_names: bool) -> list[response_module.ViewCells]:
        """Every view's HMGETs in one pipeline; per view the raw cells of each distinct entity."""
        work = []
        keys: list[bytes] = []
        texts: dict = {}
        prefix = codec.key_prefix(config.project)
        for table, requested in grouped_refs:
            entities, order, output_len = _unique_entities(
                table, join_key_values, entity_name_to_join_key_map, texts, key_part)
            suffix = codec.key_suffix(view_name(table, config))
            work.append((table, list(requested), order, output_len, len(keys), len(entities)))
            keys.extend([f"{prefix}{e}{suffix}".encode() for e in entities])
        if not work:
            return []
        replies = self._hmget_grouped(config, keys, work)
        now = _now_micros()
        return [_view_cells(table, requested, replies[start:start + count], order, output_len, now,
                            full_feature_names)
                for table, requested, order, output_len, start, count in work]

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
        """Feast's path (entity values as protos): the same pipelined read, the vectors appended
        to Feast's response as protobuf bytes."""
        views = self._read_views(config, grouped_refs, join_key_values, entity_name_to_join_key_map,
                                 _proto_key_part, full_feature_names)
        for view in views:
            response_module.append_view(online_features_response, view, include_feature_view_version_metadata)
        collector = getattr(_collector, "views", None)
        if collector is not None:
            collector.extend(views)

    def _hmget_grouped(self, config: RepoConfig, keys: list[bytes], work) -> list:
        """One round trip for every view's HMGETs (each view asks for its own fields)."""
        return wire.hmget(private.redis_client(self, config),
                          [([n.encode() for n in requested] + [TS_FIELD], keys[start:start + count])
                           for _, requested, _, _, start, count in work])

    async def _read_features_per_fv_async(self, config, grouped_refs, join_key_values,
                                          entity_name_to_join_key_map, online_features_response,
                                          full_feature_names, include_feature_view_version_metadata) -> None:
        import asyncio

        await asyncio.to_thread(
            self._read_features_per_fv, config, grouped_refs, join_key_values, entity_name_to_join_key_map,
            online_features_response, full_feature_names, include_feature_view_version_metadata,
        )

    # ---- housekeeping ------------------------------------------------------------------

    def _delete_matching(self, config: RepoConfig, pattern: str) -> int:
        client = private.redis_client(self, config)
        deleted = 0
        batch: list[bytes] = []
        for key in client.scan_iter(match=pattern, count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                deleted += client.unlink(*batch)
                batch.clear()
        if batch:
            deleted += client.unlink(*batch)
        return deleted

    def delete_table(self, config: RepoConfig, table: FeatureView) -> None:
        view = view_name(table, config)
        n = self._delete_matching(config, f"{_glob_escape(config.project)}:{{*}}:{_glob_escape(view)}")
        log.info("online_store.delete_table", view=view, keys=n)

    def delete_entity_values(self, config: RepoConfig, join_keys: list[str]) -> None:
        pattern = ",".join(f"{_glob_escape(k)}=*" for k in sorted(join_keys))
        n = self._delete_matching(config, f"{_glob_escape(config.project)}:{{{pattern}}}:*")
        log.info("online_store.delete_entity_values", join_keys=join_keys, keys=n)

    def update(self, config: RepoConfig, tables_to_delete: Sequence[FeatureView],
               tables_to_keep: Sequence[FeatureView], entities_to_delete: Sequence[Entity],
               entities_to_keep: Sequence[Entity], partial: bool) -> None:
        if config.online_store.full_scan_for_deletion:
            for table in tables_to_delete:
                self.delete_table(config, table)

    def teardown(self, config: RepoConfig, tables: Sequence[FeatureView], entities: Sequence[Entity]) -> None:
        for table in tables:
            self.delete_table(config, table)


def _proto_key_part(value: ValueProto) -> str:
    return codec.key_part(codec.proto_value(value))


def _track_read(started: float) -> None:
    if private.online_read_metrics_enabled():
        from feast.metrics import track_online_store_read

        track_online_store_read(time.monotonic() - started)


def _columnar(entity_rows) -> dict[str, list] | None:
    """Entity rows as columns (Feast accepts both shapes); ``None`` when they are not plain."""
    if isinstance(entity_rows, list):
        if not entity_rows or not all(isinstance(r, dict) for r in entity_rows):
            return None
        names = list(entity_rows[0])
        if any(len(r) != len(names) for r in entity_rows):
            return None
        try:
            return {k: [r[k] for r in entity_rows] for k in names}
        except KeyError:
            return None
    if isinstance(entity_rows, dict) and all(isinstance(v, list) for v in entity_rows.values()):
        return entity_rows
    return None


_INT64 = (-(2**63), 2**63 - 1)


def _plain_column(values: list, value_type: ValueType) -> bool:
    """Values the direct path keys exactly as Feast's proto conversion would (else Feast's path)."""
    if value_type == ValueType.INT64:
        return all(type(v) is int for v in values) and _INT64[0] <= min(values) and max(values) <= _INT64[1]
    if value_type == ValueType.STRING:
        return all(type(v) is str for v in values)
    return False


def _plain_request(registry, project: str, features, full_feature_names: bool, columns: dict[str, list] | None):
    """Feast's cached request resolution, when the request needs nothing but feature view reads."""
    if not columns:
        return None
    try:
        ctx = private.request_context(registry, project, features, full_feature_names)
    except Exception:  # noqa: BLE001 - Feast's path raises its own error for the same request
        return None
    if ctx.on_demand_views or ctx.request_data or ctx.entityless or getattr(features, "precompute_online", False):
        return None
    n = len(next(iter(columns.values())))
    if n == 0 or any(len(v) != n for v in columns.values()):
        return None
    if any(k not in ctx.join_keys or not _plain_column(v, ctx.entity_type_map.get(k)) for k, v in columns.items()):
        return None
    return ctx.grouped_refs, ctx.entity_name_to_join_key_map, ctx.entity_type_map


def _view_cells(table: FeatureView, requested: list[str], replies: list, order: list[int] | None,
                output_len: int, now: int, full_feature_names: bool) -> response_module.ViewCells:
    """One view's replies as columns of raw cells per distinct entity, with statuses and event
    times; a value past the view's TTL is ``OUTSIDE_MAX_AGE`` and its cells are dropped."""
    ttl = ttl_micros(table)
    cutoff = now - ttl if ttl else None
    status = [NOT_FOUND] * len(replies)
    ts = [0] * len(replies)
    absent = (None,) * (len(requested) + 1)
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
    columns = list(zip(*live))[:-1] if live else [()] * len(requested)
    table_name = table.projection.name_to_use()
    names = [f"{table_name}__{f}" if full_feature_names else f for f in requested]
    if _track_feature_statuses is not None:
        present = status.count(PRESENT) if order is None else sum(status[u] == PRESENT for u in order)
        _track_feature_statuses(table.name, present * len(requested), len(requested) * (output_len - present))
    return response_module.ViewCells(
        names=names, columns=columns, status=status, ts=ts, order=order, output_len=output_len,
        meta_name=table.projection.name_alias or table.projection.name,
        version=getattr(table, "current_version_number", 0) or 0)


def _unique_entities(table: FeatureView, join_key_values, entity_name_to_join_key_map,
                     texts: dict, key_part: Callable[[Any], str] = _proto_key_part,
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
        done = texts[done_key] = _distinct(names, values, texts, key_part)
    return done


def _distinct(names: list[str], values: dict, texts: dict, key_part: Callable[[Any], str]):
    columns = []
    for name in names:
        column = values[name]
        cached = texts.get(id(column))
        if cached is None:
            cached = texts[id(column)] = [key_part(v) for v in column]
        columns.append(cached)
    if len(names) == 1:
        head = names[0] + "="
        row_texts = [head + t for t in columns[0]]
    else:
        row_texts = [codec.entity_text(names, parts) for parts in zip(*columns)]
    first: dict[str, int] = {}
    order = [first.setdefault(t, len(first)) for t in row_texts]
    if len(first) == len(order):
        return row_texts, None, len(order)
    return list(first), order, len(order)


def _slices(data: pa.Table, rows: int) -> Iterator[pa.Table]:
    for start in range(0, data.num_rows, max(1, rows)):
        yield data.slice(start, rows)
