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

Selected in ``feature_store.yaml`` with ``type: feedstore.feast.online_store.TTLRedisOnlineStore``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import structlog
from feast import Entity, FeatureView, RepoConfig, utils
from feast.infra.online_stores.redis import RedisOnlineStore, RedisOnlineStoreConfig
from feast.online_response import OnlineResponse
from feast.protos.feast.serving.ServingService_pb2 import FieldStatus, GetOnlineFeaturesResponse
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from redis import Redis
from redis.exceptions import NoScriptError

from feedstore.feast import codec, resp
from feedstore.feast import response as response_module

try:
    from feast.metrics import track_feature_statuses as _track_feature_statuses
except ImportError:  # metrics are optional in Feast
    _track_feature_statuses = None

_collector = threading.local()
"""While our ``get_online_features`` runs: the raw cells per output feature name."""

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

    type: Literal["feedstore.feast.online_store.TTLRedisOnlineStore"] = (  # type: ignore[assignment]
        "feedstore.feast.online_store.TTLRedisOnlineStore"
    )
    write_chunk_rows: int = 5_000
    """Rows per pipelined round trip when writing Arrow tables."""
    write_workers: int = 2
    """Threads writing chunks concurrently (encoding overlaps the round trips)."""
    write_rows_per_call: int = 200
    """Rows per newer-wins script call on a single Redis (fewer replies, less per-call work)."""


def ttl_micros(view: FeatureView) -> int:
    """0 means no TTL, as in Feast."""
    ttl = view.ttl
    return int(ttl.total_seconds() * 1_000_000) if ttl else 0


def _now_micros() -> int:
    return time.time_ns() // 1000


def view_name(view: FeatureView, config: RepoConfig) -> str:
    from feast.infra.online_stores.redis import _versioned_fv_name

    return _versioned_fv_name(view, config)


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
        sha = self._sha(client)
        names = [name for name, _ in columns]
        if isinstance(client, Redis):
            names_part = resp.bulk(b"%d" % len(names)) + b"".join(map(resp.bulk, names))
            cells = [list(map(resp.bulk, values)) for _, values in columns]
            rows = list(map(b"".join, zip(map(resp.bulk, ts), map(resp.bulk, exp), *cells)))
            key_cells = list(map(resp.bulk, keys))
            parts = []
            for start in range(0, len(keys), rows_per_call):
                n = len(key_cells[start:start + rows_per_call])
                parts.append(b"*%d\r\n$7\r\nEVALSHA\r\n" % (4 + len(names) + n * (3 + len(names)))
                             + resp.bulk(sha) + resp.bulk(b"%d" % n))
                parts.extend(key_cells[start:start + n])
                parts.append(names_part)
                parts.extend(rows[start:start + n])
            replies = resp.execute_packed(client, b"".join(parts), -(-len(keys) // rows_per_call))
        else:
            commands = [[b"EVALSHA", sha, b"1", k, b"%d" % len(names), *names, t, e,
                         *(values[i] for _, values in columns)]
                        for i, (k, t, e) in enumerate(zip(keys, ts, exp))]
            replies = resp.execute_commands(client, commands)
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
        client = self._get_client(config.online_store)
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
        client = self._get_client(store_config)
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
        client = self._get_client(config.online_store)
        if isinstance(client, Redis):
            head = b"*%d\r\n$5\r\nHMGET\r\n" % (len(fields) + 2)
            tail = b"".join(map(resp.bulk, fields))
            payload = b"".join(head + resp.bulk(k) + tail for k in keys)
            replies = resp.execute_packed(client, payload, len(keys))
        else:
            replies = resp.execute_commands(client, [[b"HMGET", k, *fields] for k in keys])
        for r in replies:
            if isinstance(r, Exception):
                raise r
        return replies

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
        """Feast's method; the response it returns converts to Python from the raw cells read here
        (once per distinct entity, not once per row)."""
        cells: dict[str, tuple[list[bytes | None], list[int] | None]] = {}
        _collector.cells = cells
        try:
            response = super().get_online_features(
                config, features, entity_rows, registry, project, full_feature_names,
                include_feature_view_version_metadata)
        finally:
            _collector.cells = None
        return response_module.CellOnlineResponse(response.proto, response._feature_types, cells)

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
        """All views in one pipeline; the response vectors are assembled as protobuf bytes and
        parsed once per feature instead of once per cell (the bulk of Feast's read time)."""
        work = []
        keys: list[bytes] = []
        texts: dict[int, list[str]] = {}
        prefix = codec.key_prefix(config.project)
        for table, requested in grouped_refs:
            entities, order, output_len = _unique_entities(
                table, join_key_values, entity_name_to_join_key_map, texts)
            suffix = codec.key_suffix(view_name(table, config))
            work.append((table, list(requested), order, output_len, len(keys), len(entities)))
            keys.extend([f"{prefix}{e}{suffix}".encode() for e in entities])
        if not work:
            return
        replies = self._hmget_grouped(config, keys, work)
        now = _now_micros()
        collector = getattr(_collector, "cells", None)
        for table, requested, order, output_len, start, count in work:
            self._append_vectors(
                online_features_response, table, requested, replies[start:start + count], order,
                output_len, now, full_feature_names, include_feature_view_version_metadata, collector,
            )

    def _hmget_grouped(self, config: RepoConfig, keys: list[bytes], work) -> list:
        """One round trip for every view's HMGETs (each view asks for its own fields)."""
        client = self._get_client(config.online_store)
        per_view = []
        for _, requested, _, _, start, count in work:
            fields = [n.encode() for n in requested] + [TS_FIELD]
            per_view.append((fields, keys[start:start + count]))
        if isinstance(client, Redis):
            parts = []
            for fields, view_keys in per_view:
                head = b"*%d\r\n$5\r\nHMGET\r\n" % (len(fields) + 2)
                tail = b"".join(map(resp.bulk, fields))
                parts.extend([head + resp.bulk(k) + tail for k in view_keys])
            replies = resp.execute_packed(client, b"".join(parts), len(keys))
        else:
            replies = resp.execute_commands(
                client, [[b"HMGET", k, *fields] for fields, view_keys in per_view for k in view_keys])
        for r in replies:
            if isinstance(r, Exception):
                raise r
        return replies

    @staticmethod
    def _append_vectors(response, table, requested, replies, order, output_len, now,
                        full_feature_names, include_version, collector) -> None:
        ttl = ttl_micros(table)
        cutoff = now - ttl if ttl else None
        rows: list = [None] * len(replies)     # the replies of present entities
        status = [NOT_FOUND] * len(replies)
        present_ts: list[int] = []
        present_at: list[int] = []
        for u, reply in enumerate(replies):
            raw_ts = reply[-1]
            if raw_ts is None:
                continue
            ts = int(raw_ts)
            if cutoff is not None and ts <= cutoff:
                status[u] = OUTSIDE_MAX_AGE
                continue
            status[u] = PRESENT
            rows[u] = reply
            present_ts.append(ts)
            present_at.append(u)
        ts_cells = [b"\x1a\x00"] * len(replies)
        for u, cell in zip(present_at, codec.timestamp_cells(present_ts)):
            ts_cells[u] = cell

        if order is None:
            ts_part = b"".join(ts_cells)
            status_part = b"\x12" + codec._len_prefix(output_len) + bytes(status)
        else:
            ts_part = b"".join([ts_cells[u] for u in order])
            status_part = b"\x12" + codec._len_prefix(output_len) + bytes([status[u] for u in order])

        table_name = table.projection.name_to_use()
        names = [f"{table_name}__{f}" if full_feature_names else f for f in requested]
        response.metadata.feature_names.val.extend(names)
        if include_version:
            clean = table.projection.name_alias or table.projection.name
            if clean not in [m.name for m in response.metadata.feature_view_metadata]:
                meta = response.metadata.feature_view_metadata.add()
                meta.name = clean
                meta.version = getattr(table, "current_version_number", 0) or 0

        len_prefix = codec._len_prefix
        for j, name in enumerate(names):
            column = [r[j] or None if r is not None else None for r in rows]
            cells = [b"\x0a" + len_prefix(len(v)) + v if v else b"\x0a\x00" for v in column]
            body = b"".join(cells) if order is None else b"".join([cells[u] for u in order])
            response.results.add().MergeFromString(body + status_part + ts_part)
            if collector is not None:
                collector[name] = (column, order)
        if _track_feature_statuses is not None:
            present = len(present_at) * len(requested) if order is None else \
                sum(status[u] == PRESENT for u in order) * len(requested)
            _track_feature_statuses(table.name, present, len(requested) * output_len - present)

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
        client = self._get_client(config.online_store)
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


def _unique_entities(table: FeatureView, join_key_values, entity_name_to_join_key_map,
                     texts: dict[int, list[str]]) -> tuple[list[str], list[int] | None, int]:
    """Feast's ``_get_unique_entities`` as entity texts: the distinct entities of a view, and for
    each output row the index of its entity (``None`` when every row is distinct). ``texts``
    caches each key column's texts across the views of one call."""
    values = utils._get_table_entity_values(table, entity_name_to_join_key_map, join_key_values)
    expected = set(entity_name_to_join_key_map.values()) - {"__dummy_id"}
    if any(k not in values or not values[k] for k in expected) and not any(values.values()):
        raise KeyError(f"Missing join key values for keys: {sorted(k for k in expected if k not in values)}. "
                       f"Provided join_key_values: {list(join_key_values)}")
    names = list(values)
    if not names:
        return [], None, 0
    columns = []
    for name in names:
        column = values[name]
        cached = texts.get(id(column))
        if cached is None:
            cached = texts[id(column)] = [codec.key_part(codec.proto_value(v)) for v in column]
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
