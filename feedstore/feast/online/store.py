"""Feast's Redis online store with a TTL per feature view: its config, writes and housekeeping.

Stock Feast keeps every view of an entity in one hash and can only expire the whole hash
(``key_ttl_seconds``); ``FeatureView.ttl`` is ignored online. Here each (entity, view) is its
own hash (``layout``), its fields holding the serialised ``ValueProto`` exactly as Feast writes it.

* expiry: the key expires at event time + the view's TTL (``PEXPIREAT``); a read also drops
  any value older than the TTL (status ``OUTSIDE_MAX_AGE``, ``read``), so a value past its TTL
  is never served even if the TTL was shortened after it was written;
* newer wins, as in Feast: a Lua script writes a row only when its event time is later than
  the stored one, atomically, in one round trip;
* the hash tag ``{...}`` puts all views of an entity in one Redis Cluster slot.

Selected in ``feature_store.yaml`` with ``type: feedstore.feast.online.store.TTLRedisOnlineStore``.
"""

from __future__ import annotations

import asyncio
import sys
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
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from pydantic import field_validator
from redis.exceptions import NoScriptError

from feedstore.feast import private
from feedstore.feast.online import codec, layout, wire
from feedstore.feast.online.read import TTLRedisReads

log = structlog.get_logger(__name__)

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


NEWEST_SCRIPT = """
local cur = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '-1')
if tonumber(ARGV[2]) > cur then redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) end
return 0
"""
"""Raises view ``ARGV[1]``'s newest event time in hash ``KEYS[1]`` to ``ARGV[2]`` (µs) if later."""


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

    @field_validator("redis_type", mode="before")
    @classmethod
    def _type_or_single(cls, value: object) -> object:
        """An environment from before ``FEED_FEAST_REDIS_TYPE`` existed means a single server."""
        return "redis" if isinstance(value, str) and value.startswith("${") else value

    @field_validator("connection_string")
    @classmethod
    def _substituted(cls, value: str) -> str:
        """``feature_store.yaml`` names its endpoints as ``${FEED_FEAST_…}``, which Feast leaves as
        they are when unset; say so here, before Feast fails deep in SQLAlchemy's URL parser."""
        if "${" in value:
            unset_environment(value)
        return value


def unset_environment(value: str) -> NoReturn:
    """One line naming the unset variable (``value`` is the unexpanded ``${NAME}``)."""
    cli_error(f"{value.strip('${}')} is not set: feature_store.yaml takes its endpoints from the environment. "
              'Run `./run feast …` (or `feedstore feast …`), or eval "$(./run stack env)" first.')


def cli_error(message: str) -> NoReturn:
    """A configuration error as one line and exit 2 under the ``feast`` CLI, else ``ValueError``."""
    if Path(sys.argv[0]).name == "feast":
        # The feast CLI prints any exception as a traceback; a user who forgot the environment gets one line.
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(2)
    raise ValueError(message)


class TTLRedisOnlineStore(TTLRedisReads, RedisOnlineStore):
    """Feast's ``RedisOnlineStore`` with one key per (entity, view), expiring with the view's TTL;
    reads come from ``TTLRedisReads``."""

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

    @staticmethod
    def _note_newest(client, project: str, view: str, newest_us: int) -> None:
        client.eval(NEWEST_SCRIPT, 1, layout.newest_key(project), view, str(int(newest_us)))

    def online_write_batch(
        self,
        config: RepoConfig,
        table: FeatureView,
        data: list[tuple[EntityKeyProto, dict[str, ValueProto], datetime, datetime | None]],
        progress: Callable[[int], Any] | None,
    ) -> None:
        """Feast's row-of-protos write (``push``, stock materialization), with per-view expiry."""
        client = private.redis_client(self, config)
        view = layout.view_name(table, config)
        ttl = layout.ttl_micros(table)
        now = layout.now_micros()
        groups: dict[tuple[str, ...], list[tuple[bytes, int, dict[str, ValueProto]]]] = {}
        for entity_key, values, event_ts, _ in data:
            ts = codec.datetime_to_micros(event_ts)
            if ttl and ts + ttl <= now:
                continue  # already past its TTL: never served, so never written
            key = layout.redis_key(config.project, layout.entity_key_text(entity_key), view)
            groups.setdefault(tuple(values), []).append((key, ts, values))
        for names, rows in groups.items():
            self._send_rows(
                client,
                [k for k, _, _ in rows],
                [str(ts).encode() for _, ts, _ in rows],
                [str((ts + ttl) // 1000 if ttl else 0).encode() for _, ts, _ in rows],
                [(n.encode(), [v[n].SerializeToString() for _, _, v in rows]) for n in names],
            )
        if groups:
            self._note_newest(client, config.project, view, max(ts for rows in groups.values() for _, ts, _ in rows))
        if progress:
            progress(len(data))

    async def online_write_batch_async(self, config, table, data, progress) -> None:
        """The sync path in a worker thread: one code path for the dedup and expiry rules."""
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
        view = layout.view_name(table, config)
        ttl = layout.ttl_micros(table)
        prefix, suffix = layout.key_prefix(config.project), layout.key_suffix(view)

        def write_chunk(chunk: pa.Table) -> int:
            ts = codec.to_micros(chunk.column(ts_field))
            if ttl:
                live = ts + ttl > layout.now_micros()
                if not live.all():
                    chunk, ts = chunk.filter(pa.array(live)), ts[live]
            if chunk.num_rows == 0:
                return 0
            keys = [f"{prefix}{e}{suffix}".encode() for e in layout.entity_texts(chunk, join_keys)]
            exp = ts // 1000 + ttl // 1000 if ttl else np.zeros_like(ts)
            written = self._send_rows(
                client, keys, [str(t).encode() for t in ts.tolist()], [str(e).encode() for e in exp.tolist()],
                [(name.encode(), codec.encode_column(chunk.column(name), vt)) for name, vt in features],
                store_config.write_rows_per_call,
            )
            self._note_newest(client, config.project, view, int(ts.max()))
            if progress:
                progress(chunk.num_rows)
            return written

        chunks = _slices(data, store_config.write_chunk_rows)
        workers = max(1, store_config.write_workers)
        if workers == 1:
            return sum(map(write_chunk, chunks))
        with ThreadPoolExecutor(workers, thread_name_prefix="redis-write") as pool:
            return sum(pool.map(write_chunk, chunks))

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
        view = layout.view_name(table, config)
        n = self._delete_matching(config, layout.view_keys_pattern(config.project, view))
        private.redis_client(self, config).hdel(layout.newest_key(config.project), view)
        log.info("online_store.delete_table", view=view, keys=n)

    def delete_entity_values(self, config: RepoConfig, join_keys: list[str]) -> None:
        n = self._delete_matching(config, layout.entity_keys_pattern(config.project, join_keys))
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


def _slices(data: pa.Table, rows: int) -> Iterator[pa.Table]:
    for start in range(0, data.num_rows, max(1, rows)):
        yield data.slice(start, rows)
