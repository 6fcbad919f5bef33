"""Serving example: the features a ranker reads for one user and 500 candidate items.

    eval "$(feedstore stack env)"
    python feature_repo/examples/rank_online.py --user-id 42 --items 500

Run after `feast -c feature_repo apply` and a materialization. A serving process calls
`tune_gc()` once after start-up (see feedstore/feast/serving.py for why).
"""

from __future__ import annotations

import argparse
import time

from feedstore.feast.serving import tune_gc, warm_up
from feedstore.feast.store import store


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--user-id", type=int, default=1)
    p.add_argument("--items", type=int, default=500)
    args = p.parse_args()
    fs = store()
    ranking = fs.get_feature_service("ranking")
    warm_up(fs)
    tune_gc()
    candidates = fs.get_online_features(features=["user_candidates:candidate_item_ids"],
                                        entity_rows=[{"user_id": args.user_id}]).to_dict()["candidate_item_ids"][0]
    items = (candidates or list(range(1, args.items + 1)))[: args.items]
    rows = [{"user_id": args.user_id, "item_id": item} for item in items]
    started = time.perf_counter()
    features = fs.get_online_features(features=ranking, entity_rows=rows).to_dict()
    ms = (time.perf_counter() - started) * 1000
    found = sum(v is not None for v in features["item_embedding"])
    print(f"{len(rows)} rows × {len(features) - 2} features in {ms:.1f} ms; item embeddings found for {found}")


if __name__ == "__main__":
    main()
