from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import psycopg

from feedstore.db import connect
from feedstore.ids import ITEMS
from ingestion.catalog import CatalogIndex


def test_catalog_loads_refreshes_and_checks_misses_in_postgres(catalog, pg):
    from tests.ingestion.conftest import ITEM_IDS

    index = CatalogIndex(lambda: connect(catalog), ITEMS, refresh_seconds=3600)
    try:
        index.refresh()
        assert len(index.index) >= ITEM_IDS.size
        assert index.contains(ITEM_IDS[:50]).all()
        fresh, backdated = 9_000_001, 9_000_002
        with pg.cursor() as cur:
            cur.execute("INSERT INTO items (item_id, creator_id, media_type, created_at) VALUES (%s, 1, 'text', %s), "
                        "(%s, 1, 'text', %s)", (fresh, datetime.now(timezone.utc), backdated,
                                                 datetime.now(timezone.utc) - timedelta(days=400)))
        # Not refreshed yet (an hour away): both are found by the lookup of misses and remembered.
        assert index.contains(np.array([fresh, backdated, 9_000_003])).tolist() == [True, True, False]
        assert index.index.contains(np.array([fresh, backdated])).all()
        newer = 9_000_004
        pg.execute("INSERT INTO items (item_id, creator_id, media_type, created_at) VALUES (%s, 1, 'text', now())",
                   (newer,))
        assert index.refresh(force=True) >= 1
        assert index.index.contains(np.array([newer])).all()
    finally:
        index.close()
        pg.execute("DELETE FROM items WHERE item_id BETWEEN 9000001 AND 9000004")


def test_binary_copy_parse_handles_an_empty_table(settings):
    from psycopg import sql

    with psycopg.connect(settings.postgres.dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS empty_ids (id BIGINT, created_at TIMESTAMPTZ)")
    from feedstore.ids import Table

    index = CatalogIndex(lambda: connect(settings), Table("empty_ids", "id"))
    try:
        index.load()
        assert len(index.index) == 0
    finally:
        index.close()
        with psycopg.connect(settings.postgres.dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier("empty_ids")))
