"""Serving processes: garbage-collector settings and the HTTP feature server (``feedstore serve``).

A ranking call for 500 items allocates enough objects to trigger a full collection every few
calls, and a full collection walks every object Feast and its imports created (p99 133 ms
instead of 17 ms). After start-up we collect once, ``gc.freeze()`` the survivors (they are
never scanned again) and raise the young-generation threshold. ``feast serve`` additionally
recycles its gunicorn worker every ~1000 requests (a ~0.5 s stall); this server runs Feast's
own FastAPI app (same endpoints and payloads) in one long-lived uvicorn process.

Feast's ``/get-online-features`` handler hops to a worker thread up to three times per request
(feature service lookup, read, JSON conversion); on a busy two-core machine each hop can wait
milliseconds for the GIL, and it deserialises the feature service from the registry (3 ms) and
validates the body through FastAPI/pydantic on every request. Without authorization (permissions
are then no-ops) a raw ASGI route in front of Feast's answers instead: msgspec in and out, the
feature service cached per registry refresh, the read in the event loop (a single sub-millisecond
Redis round trip; one process serves one request at a time either way). Bodies it does not take
as they are, and audit logging, go to Feast's own route.
"""

from __future__ import annotations

import gc
import time
from typing import Any

import msgspec
import structlog

from feedstore.feast import private
from feedstore.settings import Settings, get_settings

log = structlog.get_logger(__name__)


def tune_gc(threshold: int | None = None) -> None:
    """Call once the process has loaded everything it keeps (registry, clients, models)."""
    gen0 = threshold or get_settings().serve.gc_threshold
    gc.collect()
    gc.freeze()
    gc.set_threshold(gen0, 50, 1000)


def warm_up(fs, service: str = "ranking") -> None:
    """Load the registry, open connections and compile paths before the first request."""
    svc = fs.get_feature_service(service)
    entity_row = {e.join_key: 0 for e in fs.list_entities()}
    fs.get_online_features(features=svc, entity_rows=[entity_row]).to_dict()


class OnlineRequest(msgspec.Struct):
    """Feast's ``GetOnlineFeaturesRequest``; a body this strict decoder rejects goes to Feast's
    own handler, so lax coercions and validation errors stay exactly Feast's."""

    entities: dict[str, list[Any]]
    feature_service: str | None = None
    features: list[str] = []
    full_feature_names: bool = False
    include_feature_view_version_metadata: bool = False


class FeatureServices:
    """Feature services by name, rebuilt only when the registry cache refreshes: Feast's
    ``get_feature_service(allow_cache=True)`` deserialises the service from the cached registry
    proto on every call (3 ms here, five times the Redis read of a one-user request)."""

    def __init__(self, fs) -> None:
        self._fs = fs
        self._cache: dict[str, Any] = {}
        self._stamp: object = None

    def get(self, name: str):
        registry = self._fs.registry
        stamp = getattr(registry, "cached_registry_proto_created", None)
        is_valid = getattr(registry, "is_cache_valid", None)
        if stamp is None or not (callable(is_valid) and is_valid()):
            return self._fs.get_feature_service(name, allow_cache=True)  # refreshes; the next call caches
        if stamp != self._stamp:
            self._cache, self._stamp = {}, stamp
        service = self._cache.get(name)
        if service is None:
            service = self._cache[name] = self._fs.get_feature_service(name, allow_cache=True)
        return service


async def _body(receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks)
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes):
    sent = False

    async def receive():
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}
    return receive


class OnlineFeaturesEndpoint:
    """Raw ASGI ``POST /get-online-features``: the body decoded by msgspec, the read run in the
    event loop (one sub-millisecond Redis round trip; Feast hops to worker threads three times),
    the answer encoded by msgspec. Same request and response JSON as Feast's handler; errors
    propagate to Feast's exception handler, so error responses are Feast's too."""

    def __init__(self, fs, fallback, feature_count_bins: list[int]) -> None:
        self.fs = fs
        self.fallback = fallback
        self.services = FeatureServices(fs)
        self.bins = feature_count_bins
        self._decode = msgspec.json.Decoder(OnlineRequest).decode
        self._encode = msgspec.json.Encoder().encode

    async def __call__(self, scope, receive, send) -> None:
        from feast import metrics as feast_metrics
        from feast.feature_server import bin_feature_count
        from feast.feature_server_utils import convert_response_to_dict

        body = await _body(receive)
        if private.audit_logging_enabled():  # Feast's handler writes the audit records
            await self.fallback(scope, _replay(body), send)
            return
        try:
            request = self._decode(body)
        except msgspec.MsgspecError:
            await self.fallback(scope, _replay(body), send)  # Feast's 422 (or its coercion)
            return
        with feast_metrics.track_request_latency("/get-online-features") as ctx:
            features = self.services.get(request.feature_service) if request.feature_service else request.features
            feat_count, ctx.feature_view_count = private.resolve_feature_counts(features)
            ctx.feature_count = bin_feature_count(int(feat_count), self.bins)
            feast_metrics.track_online_features_entities(len(next(iter(request.entities.values()), [])))
            response = self.fs.get_online_features(
                features=features, entity_rows=request.entities, full_feature_names=request.full_feature_names,
                include_feature_view_version_metadata=request.include_feature_view_version_metadata)
            payload = self._encode(convert_response_to_dict(response.proto))
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(payload))]})
        await send({"type": "http.response.body", "body": payload})


SERVE_PREFIX = "feedstore_serve_"
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


class ServeMetrics:
    """The feature server's request rate, latency and errors, on a registry of its own (Feast's
    ``feast.metrics`` may switch prometheus_client to multiprocess files); GET /metrics serves it.
    Endpoints are the app's own routes (anything else is ``other``), so label sets stay bounded
    and every known endpoint's counters exist at 0 from the start."""

    def __init__(self, endpoints: list[str], registry=None) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.registry = registry or CollectorRegistry()
        r, p = self.registry, SERVE_PREFIX
        self.endpoints = frozenset(endpoints)
        self.requests = Counter(p + "requests", "HTTP requests answered, by endpoint and status code",
                                ["endpoint", "status"], registry=r)
        self.latency = Histogram(p + "request_seconds", "Time from request to the end of the response",
                                 ["endpoint"], buckets=LATENCY_BUCKETS, registry=r)
        self.errors = Counter(p + "errors", "Error responses, by endpoint and class (4xx: the caller's, "
                              "5xx: the server's)", ["endpoint", "class"], registry=r)
        for endpoint in self.endpoints:
            self.latency.labels(endpoint)
            for cls in ("4xx", "5xx"):
                self.errors.labels(endpoint, cls)

    def endpoint(self, path: str) -> str:
        return path if path in self.endpoints else "other"

    def observe(self, path: str, status: int, seconds: float) -> None:
        endpoint = self.endpoint(path)
        self.requests.labels(endpoint, str(status)).inc()
        self.latency.labels(endpoint).observe(seconds)
        if status >= 400:
            self.errors.labels(endpoint, "5xx" if status >= 500 else "4xx").inc()


class MetricsMiddleware:
    """Outermost ASGI layer: times every HTTP request, counts its status (an exception that
    escapes is a 500), and answers GET /metrics itself."""

    def __init__(self, app, metrics: ServeMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["path"] == "/metrics":
            await self._export(send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)
        try:
            await self.app(scope, receive, send_status)
        finally:
            self.metrics.observe(scope["path"], status, time.perf_counter() - started)

    async def _export(self, send) -> None:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        body = generate_latest(self.metrics.registry)
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", CONTENT_TYPE_LATEST.encode()),
                                (b"content-length", b"%d" % len(body))]})
        await send({"type": "http.response.body", "body": body})


def instrument(app) -> MetricsMiddleware:
    paths = [path for r in app.router.routes if (path := getattr(r, "path", None)) and path != "/metrics"]
    return MetricsMiddleware(app, ServeMetrics(paths))


def install_inline_online_route(app, fs) -> bool:
    """Puts :class:`OnlineFeaturesEndpoint` in front of Feast's route (kept as its fallback), when
    no auth is configured; Feast's middleware and exception handlers still wrap it."""
    from feast.infra.feature_servers.base_config import MetricsConfig
    from feast.permissions.security_manager import get_security_manager
    from starlette.routing import Route

    if get_security_manager() is not None:  # auth configured: Feast's handler enforces it
        return False
    feast_route = next(r for r in app.router.routes if getattr(r, "path", None) == "/get-online-features")
    metrics_cfg = getattr(getattr(fs.config, "feature_server", None), "metrics", None)
    bins = getattr(metrics_cfg, "feature_count_bins", None) or MetricsConfig().feature_count_bins
    endpoint = OnlineFeaturesEndpoint(fs, feast_route.handle, bins)
    app.router.routes.insert(0, Route("/get-online-features", endpoint, methods=["POST"]))
    return True


def run(host: str, port: int, settings: Settings | None = None, registry_ttl_sec: int = 60,
        log_level: str = "INFO") -> None:
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
    log.info("serve_started", host=host, port=port, metrics=f"http://{host}:{port}/metrics")
    # log_config=None: uvicorn's records reach the root handler (feedstore.logs: JSON off a terminal).
    uvicorn.run(instrument(app), host=host, port=port, access_log=False, log_config=None,
                log_level=max(log_level.lower(), "warning", key=_LEVEL_ORDER.index),
                timeout_keep_alive=300, http="httptools", loop="uvloop")


_LEVEL_ORDER = ["debug", "info", "warning", "error"]
