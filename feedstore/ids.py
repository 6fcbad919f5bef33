"""Which users and items exist: a sorted id set with vectorised membership, and the one
Postgres query that answers for ids the set lacks. The consumer's validator and the Great
Expectations runner both ask through here."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import psycopg
from psycopg import sql


class IdIndex:
    """A sorted set of int64 ids with vectorised membership; no I/O of its own."""

    def __init__(self, ids: np.ndarray | None = None) -> None:
        self._ids = np.unique(np.asarray(ids if ids is not None else [], dtype=np.int64))

    def __len__(self) -> int:
        return int(self._ids.size)

    def contains(self, ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64)
        if self._ids.size == 0:
            return np.zeros(ids.shape, dtype=bool)
        pos = np.searchsorted(self._ids, ids)
        pos[pos == self._ids.size] = 0
        return self._ids[pos] == ids

    def add(self, ids: np.ndarray) -> None:
        """Merge new ids; a sorted merge is O(n), so callers add in batches, not one by one."""
        ids = np.asarray(ids, dtype=np.int64)
        if ids.size:
            self._ids = np.union1d(self._ids, ids)


@dataclass(frozen=True)
class Table:
    """Where one kind of id lives: its table, key column and a creation-time column."""

    name: str
    key: str
    created: str = "created_at"


USERS = Table("users", "user_id")
ITEMS = Table("items", "item_id")


def existing(conn: psycopg.Connection, table: Table, ids: np.ndarray) -> np.ndarray:
    """The ids of ``ids`` that ``table`` holds, in one query."""
    rows = conn.execute(
        sql.SQL("SELECT {key} FROM {table} WHERE {key} = ANY(%s)").format(
            key=sql.Identifier(table.key), table=sql.Identifier(table.name)),
        (np.asarray(ids, dtype=np.int64).tolist(),),
    ).fetchall()
    return np.array([r[0] for r in rows], dtype=np.int64)
