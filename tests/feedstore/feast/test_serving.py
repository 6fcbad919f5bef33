"""``feedstore serve``'s in-loop ``/get-online-features`` answers exactly as Feast's handler."""

from __future__ import annotations

import asyncio
import json

import numpy as np

from feedstore.feast import synthetic
from feedstore.feast.materialize import materialize


def post(app, body: dict) -> tuple[int, dict]:
    """One POST straight through the ASGI interface (what uvicorn does for a request)."""
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/get-online-features", "raw_path": b"/get-online-features", "query_string": b"",
             "root_path": "", "headers": [(b"content-type", b"application/json"), (b"host", b"test")],
             "client": ("127.0.0.1", 1), "server": ("test", 80)}
    incoming = [{"type": "http.request", "body": json.dumps(body).encode(), "more_body": False}]
    sent: list[dict] = []

    async def receive():
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    try:
        asyncio.run(app(scope, receive, send))
    except Exception:  # noqa: BLE001 - Starlette re-raises after sending its 500, as under uvicorn
        pass
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, json.loads(body) if body.startswith((b"{", b"[")) else body


def test_inline_route_answers_like_feasts(fs, settings):
    import time
    from datetime import datetime, timedelta, timezone

    from feast.feature_server import get_app

    from feedstore.feast.serving import install_inline_online_route

    now = time.time_ns() // 1000
    for seed, name in enumerate(["user_embedding", "item_catalog_features"]):
        view = fs.get_feature_view(name)
        synthetic.write(name, synthetic.frame(view, np.arange(301, 306), np.full(5, now - 60_000_000), seed=seed),
                        settings, part="serve")
    end = datetime.now(timezone.utc)
    materialize(fs, ["user_embedding", "item_catalog_features"], end - timedelta(hours=1), end)

    stock_app, ours_app = get_app(fs), get_app(fs)
    assert install_inline_online_route(ours_app, fs)
    assert ours_app.router.routes[0].path == "/get-online-features"
    bodies = [
        {"feature_service": "ranking", "entities": {"user_id": [301, 999], "item_id": [302, 303]}},
        {"features": ["user_embedding:user_embedding", "item_catalog_features:category"],
         "entities": {"user_id": [304], "item_id": [305]}, "full_feature_names": True},
    ]
    for body in bodies:
        (a_status, a), (b_status, b) = post(stock_app, body), post(ours_app, body)
        assert a_status == b_status == 200
        assert a == b
    assert "PRESENT" in b["results"][-1]["statuses"]
    bad = {"features": ["no_such_view:x"], "entities": {"user_id": [1]}}
    (a_status, a), (b_status, b) = post(stock_app, bad), post(ours_app, bad)
    assert a_status == b_status != 200 and a == b
