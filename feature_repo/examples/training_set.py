"""Training example: point-in-time features for labelled (user, item, time) rows.

    eval "$(feedstore stack env)"
    python feature_repo/examples/training_set.py --rows 10000 --out /tmp/training.parquet

Each entity row gets, per view, the newest feature row at or before its event_timestamp and
within the view's TTL; nothing from the future, and rows without features are kept (nulls).
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd

from feedstore.feast.store import store


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rows", type=int, default=10_000)
    p.add_argument("--out", default="training.parquet")
    args = p.parse_args()
    rng = np.random.default_rng(0)
    now = pd.Timestamp.now(tz="UTC")
    entity_df = pd.DataFrame({
        "user_id": rng.integers(1, 1_000, args.rows),
        "item_id": rng.integers(1, 10_000, args.rows),
        "event_timestamp": now - pd.to_timedelta(rng.integers(0, 7 * 86_400, args.rows), unit="s"),
        "label": rng.integers(0, 2, args.rows),
    })
    fs = store()
    job = fs.get_historical_features(entity_df=entity_df, features=fs.get_feature_service("training"))
    table = job.to_arrow()
    import pyarrow.parquet as pq

    pq.write_table(table, args.out)
    print(f"{table.num_rows} rows × {table.num_columns} columns → {args.out}")


if __name__ == "__main__":
    main()
