"""Serving processes: garbage-collector settings and the HTTP feature server (``feedstore serve``).

A ranking call for 500 items allocates enough objects to trigger a full collection every few
calls, and a full collection walks every object Feast and its imports created (p99 133 ms
instead of 17 ms). After start-up we collect once, ``gc.freeze()`` the survivors (they are
never scanned again) and raise the young-generation threshold. ``feast serve`` additionally
recycles its gunicorn worker every ~1000 requests (a ~0.5 s stall); this server runs Feast's
own FastAPI app (same endpoints and payloads) in one long-lived uvicorn process.

Feast's ``/get-online-features`` handler hops to a worker thread up to three times per request
(feature service lookup, read, JSON conversion); on a busy two-core machine each hop can wait
milliseconds for the GIL. Without authorization (permissions are then no-ops) the same request
model, read and response conversion run directly in the event loop instead: the read is a single
sub-millisecond Redis round trip, and one process serves one request at a time either way.
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


def install_inline_online_route(app, fs) -> bool:
    """Puts an in-loop ``POST /get-online-features`` in front of Feast's, when no auth is configured."""
    from fastapi.responses import JSONResponse
    from feast import metrics as feast_metrics
    from feast.feature_server import GetOnlineFeaturesRequest
    from feast.feature_server_utils import convert_response_to_dict
    from feast.permissions.security_manager import get_security_manager

    if get_security_manager() is not None:  # auth configured: Feast's handler enforces it
        return False

    async def get_online_features(request: GetOnlineFeaturesRequest) -> JSONResponse:
        with feast_metrics.track_request_latency("/get-online-features"):
            features = (fs.get_feature_service(request.feature_service, allow_cache=True)
                        if request.feature_service else request.features)
            feast_metrics.track_online_features_entities(len(next(iter(request.entities.values()), [])))
            response = fs.get_online_features(
                features=features, entity_rows=request.entities, full_feature_names=request.full_feature_names,
                include_feature_view_version_metadata=request.include_feature_view_version_metadata)
            return JSONResponse(content=convert_response_to_dict(response.proto))

    # this module postpones annotations; FastAPI needs the model class itself to read the body
    get_online_features.__annotations__ = {"request": GetOnlineFeaturesRequest, "return": JSONResponse}
    app.router.add_api_route("/get-online-features", get_online_features, methods=["POST"])
    app.router.routes.insert(0, app.router.routes.pop())
    return True


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
    install_inline_online_route(app, fs)
    warm_up(fs)
    tune_gc()
    log.info("serve.start", host=host, port=port)
    uvicorn.run(app, host=host, port=port, access_log=False, log_level="warning",
                timeout_keep_alive=300)
