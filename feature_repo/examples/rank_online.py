"""Serving example: the features a ranker reads for one user and up to 500 candidate items.

    eval "$(feedstore stack env)"
    python feature_repo/examples/rank_online.py --user-id 42 --items 500

Run after `feast -c feature_repo apply` and a materialization. The candidates come from the
`retrieval` service; without live ones (the user has none, or they are past their TTL) it says
so and ranks the first `--items` item ids instead. A serving process calls `tune_gc()` once after
start-up (see feedstore/feast/serving.py for why).
"""

from __future__ import annotations

import argparse
import time

from feedstore.feast.serving import tune_gc, warm_up
from feedstore.feast.store import store

SHOWN = ("interactions_7d", "like_rate_7d", "rt_interactions_1h", "rt_last_event_type", "category", "views_7d",
         "engagement_rate_7d")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--user-id", type=int, default=1)
    p.add_argument("--items", type=int, default=500)
    args = p.parse_args()
    if args.items < 1:
        p.error("--items must be at least 1")
    fs = store()
    ranking = fs.get_feature_service("ranking")
    warm_up(fs)
    tune_gc()
    candidates = fs.get_online_features(features=fs.get_feature_service("retrieval"),
                                        entity_rows=[{"user_id": args.user_id}]).to_dict()["candidate_item_ids"][0]
    if candidates:
        items = candidates[: args.items]
        print(f"user {args.user_id}: {len(candidates)} live candidates, ranking the first {len(items)}")
    else:
        items = list(range(1, args.items + 1))
        print(f"user {args.user_id}: no live candidates (none computed, or past the view's TTL); "
              f"falling back to item ids 1..{args.items}")
    rows = [{"user_id": args.user_id, "item_id": item} for item in items]
    started = time.perf_counter()
    features = fs.get_online_features(features=ranking, entity_rows=rows).to_dict()
    ms = (time.perf_counter() - started) * 1000
    found = sum(v is not None for v in features["item_embedding"])
    print(f"{len(rows)} rows × {len(features) - 2} features in {ms:.1f} ms; item embeddings found for {found}")
    for i in range(min(3, len(rows))):
        shown = ", ".join(f"{name}={features[name][i]!r}" for name in SHOWN if name in features)
        print(f"  item {rows[i]['item_id']}: {shown}")
    missing = [name for name in ("interactions_7d", "rt_interactions_1h") if features[name][0] is None]
    if missing:
        print(f"  not served for this user: {', '.join(missing)} (no value, or past the view's TTL)")


if __name__ == "__main__":
    main()
