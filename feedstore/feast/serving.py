"""Serving processes: garbage-collector settings and the HTTP feature server (``feedstore serve``).

A ranking call for 500 items allocates enough objects to trigger a full collection every few
calls, and a full collection walks every object Feast and its imports created (p99 133 ms
instead of 17 ms). After start-up we collect once, ``gc.freeze()`` the survivors (they are
never scanned again) and raise the young-generation threshold. ``feast serve`` additionally
recycles its gunicorn worker every ~1000 requests (a ~0.5 s stall); this server runs Feast's
own FastAPI app (same endpoints and payloads) in long-lived uvicorn processes: one by default,
``--workers N`` on one port (:mod:`feedstore.feast.serve_workers`).

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
import hmac
import math
import os
import time
from collections.abc import Callable
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
    """Feature services and feature views by name, rebuilt only when the registry cache
    refreshes: Feast's ``get_feature_service(allow_cache=True)`` and ``get_feature_view(
    allow_registry_cache=True)`` deserialise the object from the cached registry proto on every
    call (3 ms for the service; the eight views of ``ranking`` took 13 of a request's 15 ms under
    the profiler, typeguard checking every field)."""

    def __init__(self, fs) -> None:
        self._fs = fs
        self._cache: dict[tuple[str, str], Any] = {}
        self._stamp: object = None

    def _cached(self, key: tuple[str, str], load: Callable[[], Any]) -> Any:
        registry = self._fs.registry
        stamp = getattr(registry, "cached_registry_proto_created", None)
        is_valid = getattr(registry, "is_cache_valid", None)
        if stamp is None or not (callable(is_valid) and is_valid()):
            return load()  # refreshes the registry cache; the next call caches
        if stamp != self._stamp:
            self._cache, self._stamp = {}, stamp
        found = self._cache.get(key)
        if found is None:
            found = self._cache[key] = load()
        return found

    def get(self, name: str):
        return self._cached(("service", name), lambda: self._fs.get_feature_service(name, allow_cache=True))

    def view(self, name: str):
        """The feature view, or ``None`` for an on-demand view (it takes request data: Feast
        checks those); a name that is neither is a 404 (not cached)."""
        return self._cached(("view", name), lambda: _view_or_on_demand(self._fs, name)) or None


def _view_or_on_demand(fs, name: str):
    from feast.errors import FeastObjectNotFoundException

    try:
        return fs.get_feature_view(name, allow_registry_cache=True)
    except FeastObjectNotFoundException:
        try:
            fs.get_on_demand_feature_view(name, allow_registry_cache=True)
            return False  # cached as "on demand"; ``view`` answers None
        except FeastObjectNotFoundException:
            raise ClientError(404, f"no feature view {name!r}") from None


INT64 = 2 ** 63
WRITE_PATHS = ("/push", "/write-to-online-store", "/materialize")
"""Feast's write and admin endpoints: behind ``FEED_SERVE_ADMIN_TOKEN``, refused without it."""


class ClientError(Exception):
    """A request the client got wrong: answered with ``status`` and a one-line JSON error, and
    logged in one line without a traceback."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def check_entities(entities: Any, max_entities: int) -> int:
    """The entity columns of a request: a non-empty object of equally long, non-empty lists of
    integers (int64, not booleans) or strings, at most ``max_entities`` rows; returns the rows."""
    if not isinstance(entities, dict) or not entities:
        raise ClientError(400, "entities must be a non-empty object of join key -> list of values")
    lengths = set()
    for key, values in entities.items():
        if not isinstance(values, list) or not values:
            raise ClientError(400, f"entities.{key} must be a non-empty list")
        lengths.add(len(values))
        for value in values:
            if isinstance(value, bool) or not isinstance(value, (int, str)):
                shown = "NaN" if isinstance(value, float) and math.isnan(value) else msgspec.json.encode(value).decode()
                raise ClientError(400, f"entities.{key}: {shown[:40]} is not an id (an integer or a string)")
            if isinstance(value, int) and not -INT64 <= value < INT64:
                raise ClientError(400, f"entities.{key}: {value} does not fit in 64 bits")
    if len(lengths) > 1:
        raise ClientError(400, "every entity list must have the same length, got "
                          + ", ".join(f"{k}: {len(v)}" for k, v in entities.items()))
    rows = lengths.pop()
    if rows > max_entities:
        raise ClientError(400, f"{rows} entity rows in one request; at most {max_entities} (FEED_SERVE_MAX_ENTITIES)")
    return rows


def check_join_keys(fs, features, entities: dict, services: FeatureServices | None = None) -> None:
    """Every join key the requested views need is given, and no other: Feast's message for a
    wrong key names every key of the project instead of the one that is wrong. ``services``
    caches the views between registry refreshes."""
    from feedstore.feast.online.requests import join_key_problem

    lookup = (services or FeatureServices(fs)).view
    views = ([p.name for p in features.feature_view_projections] if not isinstance(features, list)
             else list(dict.fromkeys(ref.split(":", 1)[0] for ref in features)))
    needed: set[str] = set()
    for name in views:
        view = lookup(name)
        if view is None:
            return  # on-demand views take request data: Feast checks those
        needed.update(c.name for c in view.entity_columns)
        if isinstance(features, list):
            known = {f.name for f in view.features}
            for ref in features:
                view_name, _, feature = ref.partition(":")
                if view_name == name and feature not in known:
                    raise ClientError(404, f"feature view {name!r} has no feature {feature!r}")
    problem = join_key_problem(set(entities), needed)
    if problem is not None:
        raise ClientError(400, problem)


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

    def __init__(self, fs, fallback, feature_count_bins: list[int], max_entities: int | None = None) -> None:
        self.fs = fs
        self.fallback = fallback
        self.services = FeatureServices(fs)
        self.bins = feature_count_bins
        self.max_entities = max_entities or get_settings().serve.max_entities
        self._decode = msgspec.json.Decoder(OnlineRequest).decode
        self._encode = msgspec.json.Encoder().encode

    async def __call__(self, scope, receive, send) -> None:
        from feast import metrics as feast_metrics
        from feast.feature_server import bin_feature_count
        from feedstore.feast.online.response import response_dict

        body = await _body(receive)
        if private.audit_logging_enabled():  # Feast's handler writes the audit records
            await self.fallback(scope, _replay(body), send)
            return
        try:
            body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ClientError(400, f"the body is not JSON: not UTF-8 at byte {exc.start}") from None
        try:
            request = self._decode(body)
        except msgspec.MsgspecError:
            try:
                msgspec.json.decode(body)
            except msgspec.DecodeError as exc:
                raise ClientError(400, f"the body is not JSON: {str(exc)[:120]}") from None
            await self.fallback(scope, _replay(body), send)  # Feast's 422 (or its coercion)
            return
        with feast_metrics.track_request_latency("/get-online-features") as ctx:
            check_entities(request.entities, self.max_entities)
            if not request.feature_service and not request.features:
                raise ClientError(400, "name a feature_service or a list of features")
            features = self.services.get(request.feature_service) if request.feature_service else request.features
            check_join_keys(self.fs, features, request.entities, self.services)
            feat_count, ctx.feature_view_count = private.resolve_feature_counts(features)
            ctx.feature_count = bin_feature_count(int(feat_count), self.bins)
            feast_metrics.track_online_features_entities(len(next(iter(request.entities.values()), [])))
            response = self.fs.get_online_features(
                features=features, entity_rows=request.entities, full_feature_names=request.full_feature_names,
                include_feature_view_version_metadata=request.include_feature_view_version_metadata)
            payload = self._encode(response_dict(response))
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(payload))]})
        await send({"type": "http.response.body", "body": payload})


SERVE_PREFIX = "feedstore_serve_"
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


class ServeMetrics:
    """The feature server's request rate, latency and errors, on a registry of its own (Feast's
    ``feast.metrics`` may switch prometheus_client to multiprocess files); GET /metrics serves it.
    Endpoints are the app's own routes (anything else is ``other``), so label sets stay bounded
    and every known endpoint's counters exist at 0 from the start.

    With ``multiprocess`` (``feedstore serve --workers N``: PROMETHEUS_MULTIPROC_DIR set before
    prometheus_client was imported) every worker writes its values to that directory, and
    :attr:`exported` sums the files of all workers, so any worker's GET /metrics is the server's."""

    def __init__(self, endpoints: list[str], registry=None, multiprocess: bool = False) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.registry = registry or CollectorRegistry()
        self.exported = _multiprocess_registry(SERVE_PREFIX) if multiprocess else self.registry
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


class _Prefixed:
    """A collector passing on only the families whose name starts with ``prefix``: Feast's own
    metrics write to the same multiprocess directory, and /metrics serves ours only, as with one
    worker."""

    def __init__(self, collector, prefix: str) -> None:
        self.collector = collector
        self.prefix = prefix

    def collect(self):
        return (family for family in self.collector.collect() if family.name.startswith(self.prefix))


def _multiprocess_registry(prefix: str):
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    registry.register(_Prefixed(MultiProcessCollector(None), prefix))
    return registry


WORKER_HEADER = b"x-feedstore-worker"
"""Response header naming the process that answered (its pid): with several workers on one port,
which one a connection landed on is otherwise invisible."""


class MetricsMiddleware:
    """Outermost ASGI layer: times every HTTP request, counts its status (an exception that
    escapes is a 500), adds :data:`WORKER_HEADER`, and answers GET /metrics itself."""

    def __init__(self, app, metrics: ServeMetrics) -> None:
        self.app = app
        self.metrics = metrics
        self.worker = [(WORKER_HEADER, str(os.getpid()).encode())]

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
                message["headers"] = [*message.get("headers", ()), *self.worker]
            await send(message)
        try:
            await self.app(scope, receive, send_status)
        finally:
            self.metrics.observe(scope["path"], status, time.perf_counter() - started)

    async def _export(self, send) -> None:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        body = generate_latest(self.metrics.exported)
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", CONTENT_TYPE_LATEST.encode()),
                                (b"content-length", b"%d" % len(body)), *self.worker]})
        await send({"type": "http.response.body", "body": body})


def instrument(app, wrapped=None, multiprocess: bool = False) -> MetricsMiddleware:
    """Times ``wrapped`` (the app behind its guards; the app itself by default), labelled by the
    app's own routes; ``multiprocess``: /metrics sums every worker's (see :class:`ServeMetrics`)."""
    paths = [path for r in app.router.routes if (path := getattr(r, "path", None)) and path != "/metrics"]
    return MetricsMiddleware(wrapped or app, ServeMetrics(paths, multiprocess=multiprocess))


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


def _error(status: int, message: str, headers: list | None = None):
    from starlette.responses import JSONResponse

    return JSONResponse({"error": message}, status_code=status, headers=dict(headers or []))


async def client_error_handler(request, exc: Exception):
    """Starlette's handler for client mistakes: 4xx, one JSON line, one log line, no traceback.
    A Feast error that is not the client's is raised on, to the 500 handler."""
    from feast.errors import FeastError

    if isinstance(exc, ClientError):
        status = exc.status
    elif isinstance(exc, FeastError) and exc.http_status_code() < 500:
        status = exc.http_status_code()
    else:
        raise exc
    message = " ".join(str(exc).split())[:300]
    log.info("serve.client_error", path=request.url.path, status=status, error=message)
    return _error(status, message)


class Guard:
    """In front of the whole app: the body size limit (413), the token on write and admin
    endpoints (401/403)."""

    def __init__(self, app, max_body_bytes: int, admin_token: str | None) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.admin_token = admin_token

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = self._refusal(scope)
        if refusal is None and scope["method"] in ("POST", "PUT", "PATCH"):
            body, too_large = await self._bounded_body(receive)
            if too_large:
                refusal = (413, f"request body over {self.max_body_bytes} bytes (FEED_SERVE_MAX_BODY_BYTES)")
            else:
                receive = _replay(body)
        if refusal is not None:
            log.info("serve.client_error", path=scope["path"], status=refusal[0], error=refusal[1])
            await _error(*refusal, headers=[("www-authenticate", "Bearer")] if refusal[0] == 401 else None)(
                scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _refusal(self, scope) -> tuple[int, str] | None:
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length", b"0")
        if not length.isdigit():
            return 400, "content-length is not a number"
        if int(length) > self.max_body_bytes:
            return 413, f"request body over {self.max_body_bytes} bytes (FEED_SERVE_MAX_BODY_BYTES)"
        if not scope["path"].startswith(WRITE_PATHS):
            return None
        if not self.admin_token:
            return 403, f"{scope['path']} is off: set FEED_SERVE_ADMIN_TOKEN to enable write and admin endpoints"
        given = headers.get(b"authorization", b"").decode("latin-1")
        if not hmac.compare_digest(given.encode(), f"Bearer {self.admin_token}".encode()):
            return 401, f"{scope['path']} needs 'Authorization: Bearer <FEED_SERVE_ADMIN_TOKEN>'"
        return None

    async def _bounded_body(self, receive) -> tuple[bytes, bool]:
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return b"".join(chunks), False
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                return b"", True
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks), False


def harden(app, settings: Settings | None = None):
    """Feast's app with client errors as 4xx and the :class:`Guard` in front; returns the ASGI app to run."""
    from feast.errors import FeastError

    s = settings or get_settings()
    for exc_class in (ClientError, FeastError):
        app.add_exception_handler(exc_class, client_error_handler)
    app.middleware_stack = None  # rebuilt with the handlers on the next request
    return Guard(app, s.serve.max_body_bytes, s.serve.admin_token)


def serving_app(settings: Settings, registry_ttl_sec: int = 60, multiprocess: bool = False):
    """The ASGI app one serving process runs, warmed up and with the GC tuned: every worker calls
    this itself, so each has its own registry cache, connections and frozen heap."""
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
    guarded = harden(app, settings)
    warm_up(fs)
    served = instrument(app, guarded, multiprocess=multiprocess)
    tune_gc()
    return served


def uvicorn_config(app, log_level: str, settings: Settings, **kwargs: Any):
    """One uvicorn server's settings; ``log_config=None``: uvicorn's records reach the root
    handler (feedstore.logs: JSON off a terminal)."""
    import uvicorn

    return uvicorn.Config(app, access_log=False, log_config=None,
                          log_level=max(log_level.lower(), "warning", key=_LEVEL_ORDER.index),
                          timeout_keep_alive=300, timeout_graceful_shutdown=int(settings.serve.shutdown_grace_seconds),
                          http="httptools", loop="uvloop", **kwargs)


def run(host: str, port: int, settings: Settings | None = None, registry_ttl_sec: int = 60,
        log_level: str = "INFO", workers: int = 1) -> int:
    """Serves until SIGTERM/SIGINT; returns the exit code. One worker runs in this process; more
    are child processes on the same port (:mod:`feedstore.feast.serve_workers`)."""
    settings = (settings or get_settings()).as_component("serve")
    if workers > 1:
        from feedstore.feast.serve_workers import supervise

        return supervise(host, port, workers, log_level, settings)
    served = serving_app(settings, registry_ttl_sec)
    log.info("serve_started", host=host, port=port, pid=os.getpid(), metrics=f"http://{host}:{port}/metrics")
    serve_until_signalled(uvicorn_config(served, log_level, settings, host=host, port=port))
    return 0


def _exit_cleanly(*_: object) -> None:
    raise SystemExit(0)


def serve_until_signalled(config, sockets: list | None = None) -> None:
    """Runs uvicorn until SIGTERM/SIGINT. Once it has shut down gracefully, uvicorn re-raises the
    signal to the handler that was there before it; this one exits 0, so a clean stop is not
    reported as killed by a signal."""
    import signal

    import uvicorn

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _exit_cleanly)
    uvicorn.Server(config).run(sockets=sockets)


_LEVEL_ORDER = ["debug", "info", "warning", "error"]
