"""Serving processes: garbage-collector settings and the HTTP feature server (``feedstore serve``).

A ranking call for 500 items allocates enough objects to trigger a full collection every few
calls, and a full collection walks every object Feast and its imports created (p99 133 ms
instead of 17 ms). After start-up we collect once, ``gc.freeze()`` the survivors (they are
never scanned again) and raise the young-generation threshold. ``feast serve`` additionally
recycles its gunicorn worker every ~1000 requests (a ~0.5 s stall); this server runs Feast's
own FastAPI app (same endpoints and payloads) in one long-lived uvicorn process.
"""

from __future__ import annotations

import gc

import structlog

from feedstore.settings import Settings, get_settings

log = structlog.get_logger(__name__)


def tune_gc(threshold: int | None = None) -> None:
    """Call once the process has loaded everything it keeps (registry, clients, models)."""
    gen0 = threshold or get_settings().serve_gc_threshold
    gc.collect()
    gc.freeze()
    gc.set_threshold(gen0, 50, 1000)


def warm_up(fs, service: str = "ranking") -> None:
    """Load the registry, open connections and compile paths before the first request."""
    svc = fs.get_feature_service(service)
    entity_row = {e.join_key: 0 for e in fs.list_entities()}
    fs.get_online_features(features=svc, entity_rows=[entity_row]).to_dict()


def run(host: str, port: int, settings: Settings | None = None, registry_ttl_sec: int = 60) -> None:
    import uvicorn
    from feast.feature_server import get_app
    from feast.permissions.server.utils import (
        ServerType,
        init_auth_manager,
        init_security_manager,
        str_to_auth_manager_type,
    )

    from feedstore.feast.store import store

    fs = store(settings)
    auth_type = str_to_auth_manager_type(fs.config.auth_config.type)
    init_security_manager(auth_type=auth_type, fs=fs)
    init_auth_manager(auth_type=auth_type, server_type=ServerType.REST, auth_config=fs.config.auth_config)
    app = get_app(fs, registry_ttl_sec)
    warm_up(fs)
    tune_gc()
    log.info("serve.start", host=host, port=port)
    uvicorn.run(app, host=host, port=port, access_log=False, log_level="warning",
                timeout_keep_alive=300)
