"""The FastAPI app of ``clipiq serve``: endpoints, limits, the API key, metrics and the cross-request batcher.

:func:`create_app` builds the app from :class:`~clipiq.serve.settings.ServeSettings`. Models load in a
background thread when the app starts (``/readyz`` answers 503 until then); :func:`load_models` builds them
ahead, for callers that start many apps (tests, benchmarks) or want loading errors before serving.
Uploads are read with caps and kept in memory (:mod:`clipiq.serve.uploads`); decoding runs in the thread
pool, scoring in the batcher's worker thread (:mod:`clipiq.serve.batcher`), explaining and restoring in the
thread pool one request at a time each; nothing heavy runs on the event loop.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import logging
import os
import threading
import time
from collections.abc import Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from torch import Tensor

from clipiq.core.errors import ClipIQError
from clipiq.data.io import encode_image
from clipiq.data.runner import rounded_outputs
from clipiq.explain import Explainer
from clipiq.iqa import create_metric, get_metric_spec, list_metrics
from clipiq.iqa.base import QualityMetric
from clipiq.restore import create_restorer, get_restorer_spec, list_restorers
from clipiq.restore.base import Restorer
from clipiq.serve.batcher import Batcher, QueueFullError
from clipiq.serve.errors import ServeError
from clipiq.serve.schemas import (
    ConfigResponse,
    ErrorResponse,
    ExplainResponse,
    MetricInfo,
    RestorerInfo,
    ScoreResponse,
    StatusResponse,
)
from clipiq.serve.settings import ServeSettings
from clipiq.serve.uploads import Form, Upload, decode_upload, read_form

log = logging.getLogger("clipiq.serve")

STATIC_DIR = Path(__file__).parent / "static"
#: Explain and restore requests admitted at once (one runs, the rest wait); more get 503 queue_full.
MAX_WAITING_HEAVY = 4
#: Slack for multipart headers and form fields on top of the files' own bytes.
BODY_SLACK = 1 << 20

__all__ = ["Models", "create_app", "load_models"]


# --- models ---------------------------------------------------------------------------------------------


@dataclass
class Models:
    """What the service runs: the metric, the explainer and the enabled restorers (by registry name)."""

    metric: QualityMetric
    explainer: Explainer | None
    restorers: dict[str, Restorer]
    model_name: str = ""
    #: Restorers built for another ``scale`` than their default, by (name, scale).
    scaled: dict[tuple[str, int], Restorer] = field(default_factory=dict)


def _metric_options(settings: ServeSettings) -> dict[str, Any]:
    opts = dict(settings.metric_options)
    if settings.checkpoint:
        opts["checkpoint"] = settings.checkpoint
    if settings.metric.lower() == "clipiqa":
        opts.setdefault("attributes", "all")  # one forward pass gives the score and every attribute
    return opts


def build_metric(settings: ServeSettings) -> QualityMetric:
    """The metric exactly as the service scores with it (the same options give the same scores)."""
    return create_metric(settings.metric, model=settings.model, weights=settings.weights, device=settings.device,
                         batch_size=settings.batch_size, **_metric_options(settings))


def load_models(settings: ServeSettings, *, explain: bool = True) -> Models:
    """Build the metric, the enabled restorers and (``explain``) the explainer; errors name what failed."""
    names = [get_restorer_spec(n).name for n in settings.restore]  # unknown names fail here, with close matches
    metric = build_metric(settings)
    clip = getattr(metric, "clip", None)
    model_name = str(getattr(metric, "model_id", None) or getattr(clip, "weights_name", None) or settings.model or "")
    restorers = {n: create_restorer(n, device=settings.device) for n in names}
    explainer = None
    if explain:
        explainer = Explainer(metric, segmenter=settings.explain_segmenter, describer=settings.explain_describer,
                              device=settings.device, max_side=settings.explain_max_side, model=settings.model)
    return Models(metric=metric, explainer=explainer, restorers=restorers, model_name=model_name)


# --- the service ----------------------------------------------------------------------------------------


class _Telemetry:
    """Prometheus metrics in the app's own registry (two apps in one process never share counters)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("clipiq_requests", "HTTP requests by endpoint and status",
                                ["endpoint", "status"], registry=self.registry)
        self.latency = Histogram("clipiq_request_duration_seconds", "HTTP request latency by endpoint",
                                 ["endpoint"], registry=self.registry,
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
        self.queue_depth = Gauge("clipiq_queue_depth", "images waiting to be scored", registry=self.registry)
        self.batch_size = Histogram("clipiq_batch_size", "images per scoring batch", registry=self.registry,
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256))
        self.images = Counter("clipiq_images", "uploaded images by outcome (scored, failed)", ["outcome"],
                              registry=self.registry)


class _Gate:
    """At most ``limit`` requests admitted at once, refused (not queued) beyond: bounds waiting memory."""

    def __init__(self, limit: int, what: str = "such"):
        self._sem = threading.BoundedSemaphore(limit)
        self.limit, self.what = limit, what

    def __enter__(self) -> _Gate:
        if not self._sem.acquire(blocking=False):
            raise ServeError("queue_full", f"more than {self.limit} {self.what} requests are waiting; retry shortly",
                             headers={"Retry-After": "1"})
        return self

    def __exit__(self, *exc: object) -> None:
        self._sem.release()


class Service:
    """The app's state: settings, models (once loaded), the batcher, the locks and the telemetry."""

    def __init__(self, settings: ServeSettings, models: Models | None = None):
        self.settings = settings
        self.models = models
        self.load_error: str | None = None
        self.ready = threading.Event()
        self.telemetry = _Telemetry()
        self.batcher = Batcher(self._score_batch, batch_size=settings.batch_size, max_wait_ms=settings.max_wait_ms,
                               queue_size=settings.queue_size, on_batch=self.telemetry.batch_size.observe)
        self.telemetry.queue_depth.set_function(lambda: self.batcher.depth)
        self.explain_lock = threading.Lock()
        self.restore_lock = threading.Lock()
        self.explain_gate = _Gate(MAX_WAITING_HEAVY)
        self.restore_gate = _Gate(MAX_WAITING_HEAVY)
        # Score requests in flight (each holds its uploads) and full-size decodes at once are bounded too.
        self.score_gate = _Gate(settings.queue_size + settings.batch_size, what="score")
        self.decode_slots = asyncio.Semaphore(max(2, os.cpu_count() or 2))
        if models is not None:
            self.ready.set()

    # lifecycle
    def start(self) -> None:
        self.batcher.start()
        if self.models is None:
            threading.Thread(target=self._load, name="clipiq-serve-load", daemon=True).start()

    def stop(self) -> None:
        self.batcher.stop()

    def _load(self) -> None:
        t0 = time.perf_counter()
        try:
            self.models = load_models(self.settings)
        except Exception as e:
            self.load_error = f"{type(e).__name__}: {e}"
            log.error("loading the models failed: %s", self.load_error)
            return
        log.info("models loaded in %.1f s", time.perf_counter() - t0)
        self.ready.set()

    def require_models(self) -> Models:
        if not self.ready.is_set() or self.models is None:
            why = f"loading the models failed ({self.load_error})" if self.load_error else "the models are loading"
            raise ServeError("not_ready", f"not ready: {why}", headers={"Retry-After": "5"})
        return self.models

    # scoring (the batcher's worker thread)
    def _score_batch(self, prepared: list[Tensor]) -> list[dict[str, float]]:
        assert self.models is not None
        return self.models.metric.score_batch(prepared)

    def prepare(self, image: Tensor) -> Tensor:
        assert self.models is not None
        return self.models.metric.prepare(image)

    async def score_prepared(self, prepared: Sequence[Tensor]) -> list[dict[str, float] | BaseException]:
        """Queue prepared images for the batcher and wait for their outputs (queue_full, timeout as ServeError)."""
        if not prepared:
            return []
        try:
            futures = self.batcher.submit(list(prepared))
        except QueueFullError as e:
            raise ServeError("queue_full", f"the scoring queue is full: {e}; retry shortly",
                             headers={"Retry-After": "1"}) from None
        waiting = [asyncio.wrap_future(f) for f in futures]
        try:
            return await asyncio.wait_for(asyncio.gather(*waiting, return_exceptions=True),
                                          timeout=self.settings.timeout_s)
        except TimeoutError:
            for f in futures:
                f.cancel()  # images not yet taken by the worker are dropped, not scored for nobody
            raise ServeError("timeout", f"scoring took longer than {self.settings.timeout_s:g} s") from None


# --- helpers ----------------------------------------------------------------------------------------------


def _row(name: str, output: Any, error: str, note: str | None, output_names: Sequence[str]) -> dict[str, Any]:
    """A score row as ``clipiq score`` writes it: outputs rounded to 6 places; non-finite is an error."""
    row: dict[str, Any] = {"path": name, "score": None}
    if not error and isinstance(output, dict):
        values, error = rounded_outputs(output)
        row.update(values)
    elif not error:
        error = "no output"
    if error:
        row.update({k: None for k in output_names})
    row["error"] = error
    row["note"] = note or ""
    return row


def _reason(e: BaseException, name: str) -> str:
    msg = e.message if isinstance(e, ServeError) else (e.reason if hasattr(e, "reason") else f"{type(e).__name__}: {e}")
    return str(msg).removeprefix(f"{name}: ")


def _form_files(form: Form, fields: tuple[str, ...]) -> list[Upload]:
    extra = sorted({u.field for u in form.files} - set(fields))
    if extra:
        raise ServeError("bad_option", f"unexpected file field(s) {', '.join(map(repr, extra))}; send files as "
                                       f"{' or '.join(map(repr, fields))}")
    return form.files


_MULTIPART_FILES = {"type": "array", "items": {"type": "string", "format": "binary"}}
_MULTIPART_FILE = {"type": "string", "format": "binary"}


def _body(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
        "type": "object", "properties": properties, "required": required}}}}}


_BEARER = HTTPBearer(auto_error=False, description="the service's API key (when it has one)")
_Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARER)]

_ERRORS = {s: {"model": ErrorResponse} for s in (401, 413, 422, 503, 504)}


# --- the app ------------------------------------------------------------------------------------------------


def create_app(settings: ServeSettings | None = None, *, models: Models | None = None) -> FastAPI:
    """The service's FastAPI app. ``models``: already-built models (else they load when the app starts)."""
    settings = settings or ServeSettings()
    if models is not None:
        unknown = [n for n in settings.restore if get_restorer_spec(n).name not in models.restorers]
        if unknown:
            raise ValueError(f"models= lacks the enabled restorer(s) {', '.join(unknown)}")
    service = Service(settings, models)
    enabled = [get_restorer_spec(n).name for n in settings.restore]

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        service.start()
        try:
            yield
        finally:
            service.stop()

    app = FastAPI(title="clipiq", summary="CLIP image quality: scores, explanations and restorations",
                  version=_version(), lifespan=lifespan)
    app.state.service = service
    tel = service.telemetry
    async def check_key(creds: _Credentials) -> None:
        key = settings.api_key
        if key is None:
            return
        given = creds.credentials if creds is not None else ""
        if not given or not hmac.compare_digest(given.encode("utf-8"), key.encode("utf-8")):
            raise ServeError("unauthorized", "missing or wrong API key: send 'Authorization: Bearer <key>'",
                             headers={"WWW-Authenticate": "Bearer"})

    auth = [Depends(check_key)]

    # errors: one JSON shape
    @app.exception_handler(ServeError)
    async def _serve_error(_: Request, e: ServeError) -> JSONResponse:
        return JSONResponse(e.body(), status_code=e.status, headers=e.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, e: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(e.status_code, "bad_request")
        err = ServeError(code, str(e.detail))
        return JSONResponse(err.body(), status_code=e.status_code, headers=getattr(e, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, e: RequestValidationError) -> JSONResponse:
        err = ServeError("bad_option", "; ".join(str(x.get("msg")) for x in e.errors()) or "invalid request")
        return JSONResponse(err.body(), status_code=err.status)

    @app.exception_handler(Exception)
    async def _internal(_: Request, e: Exception) -> JSONResponse:
        log.error("internal error: %s", type(e).__name__)
        err = ServeError("internal_error", f"internal error ({type(e).__name__})")
        return JSONResponse(err.body(), status_code=err.status)

    # telemetry
    @app.middleware("http")
    async def _observe(request: Request, call_next):
        endpoint = "other"
        for route in app.router.routes:
            match, _ = route.matches(request.scope)
            if match == Match.FULL:
                endpoint = getattr(route, "path", "other")
                break
        t0 = time.perf_counter()
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            tel.requests.labels(endpoint, str(status)).inc()
            tel.latency.labels(endpoint).observe(time.perf_counter() - t0)

    async def read(request: Request, max_files: int) -> Form:
        length = request.headers.get("content-length")
        limit = max_files * settings.max_upload_bytes + BODY_SLACK
        if length is not None and length.isdigit() and int(length) > limit:
            raise ServeError("upload_too_large", f"request body of {length} bytes is above the limit of {limit} "
                                                 f"({max_files} file(s) of at most {settings.max_upload_bytes} bytes)")
        return await read_form(request.headers.get("content-type"), request.stream(),
                               max_upload_bytes=settings.max_upload_bytes, max_files=max_files)

    def decode(upload: Upload) -> tuple[Tensor, str | None]:
        try:
            return decode_upload(upload, max_pixels=settings.max_pixels, max_aspect=settings.max_aspect)
        finally:
            upload.data = bytearray()  # the upload's bytes are dropped as soon as they are decoded

    def decode_prepared(upload: Upload) -> tuple[Tensor, str | None]:
        image, note = decode(upload)
        return service.prepare(image), note

    async def one_image(request: Request) -> tuple[str, Tensor, str | None, Form]:
        form = await read(request, 1)
        files = _form_files(form, ("file", "files"))
        if not files:
            raise ServeError("no_files", "no image uploaded: send one file in the multipart field 'file'")
        upload = files[0]
        name = upload.filename
        image, note = await run_in_threadpool(decode, upload)
        return name, image, note, form

    # --- endpoints ---------------------------------------------------------------------------------------

    @app.post("/v1/score", response_model=ScoreResponse, dependencies=auth, responses=_ERRORS, tags=["quality"],
              openapi_extra=_body({"files": _MULTIPART_FILES}, ["files"]),
              summary="Score uploaded images (a bad file is an error row; the others are scored)")
    async def score(request: Request) -> dict[str, Any]:
        models = service.require_models()
        t0 = time.perf_counter()
        form = await read(request, settings.max_files)
        files = _form_files(form, ("files", "file"))
        if not files:
            raise ServeError("no_files", "no images uploaded: send files in the multipart field 'files'")
        sizes = sum(len(u.data) for u in files)
        with service.score_gate:  # requests holding uploads and decoded images are bounded, beyond: 503

            async def decode_one(u: Upload) -> tuple[Tensor, str | None]:
                async with service.decode_slots:  # full-size decoded images in memory at once: a few
                    return await run_in_threadpool(decode_prepared, u)

            decoded = await asyncio.gather(*(decode_one(u) for u in files), return_exceptions=True)
            ok = [i for i, d in enumerate(decoded) if not isinstance(d, BaseException)]
            outputs = await service.score_prepared([decoded[i][0] for i in ok])  # type: ignore[index]
        by_index = dict(zip(ok, outputs))
        names = list(models.metric.output_names)
        rows = []
        for i, (upload, d) in enumerate(zip(files, decoded)):
            if isinstance(d, BaseException):
                rows.append(_row(upload.filename, None, _reason(d, upload.filename), None, names))
                continue
            out = by_index[i]
            if isinstance(out, BaseException):
                rows.append(_row(upload.filename, None, _reason(out, upload.filename), d[1], names))
            else:
                rows.append(_row(upload.filename, out, "", d[1], names))
        failed = sum(1 for r in rows if r["error"])
        tel.images.labels("scored").inc(len(rows) - failed)
        tel.images.labels("failed").inc(failed)
        log.info("score: %d files, %d bytes, %d failed, %.0f ms", len(files), sizes, failed,
                 1000 * (time.perf_counter() - t0))
        return {"metric": models.metric.name, "model": models.model_name, "results": rows}

    @app.post("/v1/explain", response_model=ExplainResponse, dependencies=auth, responses=_ERRORS,
              tags=["quality"], openapi_extra=_body({"file": _MULTIPART_FILE}, ["file"]),
              summary="Explain one image: score, attributes, regions worst first and a quality heatmap")
    async def explain(request: Request) -> dict[str, Any]:
        models = service.require_models()
        if models.explainer is None:
            raise ServeError("not_ready", "this service was started without the explainer")
        with service.explain_gate:
            name, image, _, _ = await one_image(request)

            def run() -> dict[str, Any]:
                assert models.explainer is not None
                with service.explain_lock:
                    ex = models.explainer(image, source=name)
                return {
                    "path": name, "metric": ex.metric, "score": float(ex.score), "attributes": ex.attributes,
                    "regions": [asdict(r) for r in ex.regions],
                    "heatmap_png": base64.b64encode(encode_image(ex.heatmap[None])).decode("ascii"),  # type: ignore[index]
                    "width": int(image.shape[-1]), "height": int(image.shape[-2]), "restorers": enabled,
                }

            try:
                result = await run_in_threadpool(run)
            except (ClipIQError, ValueError) as e:
                raise ServeError("bad_image", f"{name}: {_reason(e, name)}", name) from None
        log.info("explain: %dx%d", result["width"], result["height"])
        return result

    @app.post("/v1/restore", dependencies=auth, tags=["restoration"],
              response_class=Response,
              responses={200: {"content": {"image/png": {}}, "description": "the restored image as PNG; headers "
                               "X-Clipiq-Score-Before and X-Clipiq-Score-After hold the metric's scores",
                               "headers": {"X-Clipiq-Score-Before": {"schema": {"type": "number"}},
                                           "X-Clipiq-Score-After": {"schema": {"type": "number"}}}},
                         400: {"model": ErrorResponse}, **_ERRORS},
              openapi_extra=_body({"file": _MULTIPART_FILE,
                                   "method": {"type": "string", "description": "an enabled restorer (default: "
                                              "the first)", "enum": enabled},
                                   "scale": {"type": "integer", "description": "upscaling factor, for "
                                             "restorers that take one"}}, ["file"]),
              summary="Restore one image with an enabled restorer; the PNG, with scores before and after")
    async def restore(request: Request) -> Response:
        models = service.require_models()
        with service.restore_gate:
            name, image, _, form = await one_image(request)
            # Building a restorer at a new scale loads weights: never on the event loop.
            restorer = await run_in_threadpool(_restorer, models, form.fields)
            h, w = image.shape[-2:]
            out_pixels = h * w * restorer.scale * restorer.scale
            if out_pixels > settings.max_pixels:  # the output, not only the upload, is bounded
                raise ServeError("image_too_large", f"{name}: restoring {w}x{h} at x{restorer.scale} would make "
                                 f"{out_pixels} pixels, above this service's limit of {settings.max_pixels}",
                                 name)
            image_prep = await run_in_threadpool(service.prepare, image)

            def run() -> tuple[Tensor, bytes]:
                with service.restore_lock:
                    out = restorer(image).detach().float().cpu().clamp(0.0, 1.0)
                return out, encode_image(out)

            try:
                restored, png = await run_in_threadpool(run)
            except (ClipIQError, ValueError) as e:
                raise ServeError("restore_failed", f"{name}: {restorer.name}: {_reason(e, name)}", name) from None
            after_prep = await run_in_threadpool(service.prepare, restored)
            before, after = await service.score_prepared([image_prep, after_prep])
        headers = {}
        for key, out in (("X-Clipiq-Score-Before", before), ("X-Clipiq-Score-After", after)):
            headers[key] = "" if isinstance(out, BaseException) else f"{float(out['score']):.6f}"
        headers["X-Clipiq-Restorer"] = restorer.name
        log.info("restore: %dx%d -> %dx%d", image.shape[-1], image.shape[-2], restored.shape[-1], restored.shape[-2])
        return Response(content=png, media_type="image/png", headers=headers)

    def _restorer(models: Models, fields: dict[str, str]) -> Restorer:
        if not enabled:
            raise ServeError("unknown_restorer", "no restorers are enabled on this service (clipiq serve --restore)")
        method = fields.get("method") or enabled[0]
        match = [n for n in enabled if n.lower() == method.strip().lower()]
        if not match:
            raise ServeError("unknown_restorer", f"restorer {method[:64]!r} is not enabled here; enabled: "
                                                 f"{', '.join(enabled)}")
        name = match[0]
        restorer = models.restorers[name]
        text = fields.get("scale")
        if text is None or text.strip() == "":
            return restorer
        try:
            scale = int(text)
        except ValueError:
            raise ServeError("bad_option", f"scale must be a whole number, got {text[:32]!r}") from None
        if scale == restorer.scale:
            return restorer
        if "scale" not in get_restorer_spec(name).options:
            raise ServeError("bad_option", f"{name} restores at scale {restorer.scale} only, got scale={scale}")
        key = (name, scale)
        if key not in models.scaled:
            with service.restore_lock:
                try:
                    models.scaled[key] = create_restorer(name, device=settings.device, scale=scale)
                except (ClipIQError, ValueError, TypeError) as e:
                    raise ServeError("bad_option", f"{name}: scale={scale}: {e}") from None
        return models.scaled[key]

    @app.get("/v1/metrics", response_model=list[MetricInfo], dependencies=auth, tags=["registry"],
             responses={401: {"model": ErrorResponse}}, summary="The quality metrics clipiq knows")
    async def metrics_list() -> list[dict[str, Any]]:
        serving = get_metric_spec(settings.metric).name
        return [{"name": s.name, "description": s.description, "lower_better": s.lower_better,
                 "score_range": list(s.score_range), "default_model": s.default_model,
                 "needs_checkpoint": s.needs_checkpoint, "serving": s.name == serving}
                for s in map(get_metric_spec, list_metrics())]

    @app.get("/v1/restorers", response_model=list[RestorerInfo], dependencies=auth, tags=["registry"],
             responses={401: {"model": ErrorResponse}}, summary="The restorers clipiq knows, and which are enabled")
    async def restorers_list() -> list[dict[str, Any]]:
        return [{"name": s.name, "description": s.description, "task": s.task,
                 "scale": int(s.defaults.get("scale", s.scale)), "has_weights": s.has_weights,
                 "enabled": s.name in enabled}
                for s in map(get_restorer_spec, list_restorers())]

    @app.get("/v1/config", response_model=ConfigResponse, dependencies=auth, tags=["registry"],
             responses={401: {"model": ErrorResponse}, 503: {"model": ErrorResponse}},
             summary="What this service scores with, and its limits")
    async def config() -> dict[str, Any]:
        models = service.require_models()
        return {"metric": models.metric.name, "model": models.model_name,
                "outputs": list(models.metric.output_names), "restorers": enabled,
                "max_upload_bytes": settings.max_upload_bytes, "max_pixels": settings.max_pixels,
                "max_files": settings.max_files, "max_aspect": float(settings.max_aspect),
                "auth": settings.api_key is not None}

    @app.get("/healthz", response_model=StatusResponse, response_model_exclude_none=True, tags=["operations"],
             summary="Liveness: always ok")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok"}

    @app.get("/readyz", response_model=StatusResponse, response_model_exclude_none=True, tags=["operations"],
             responses={503: {"model": StatusResponse}}, summary="Readiness: 200 once the models are loaded")
    async def readyz() -> Any:
        if service.ready.is_set():
            return {"status": "ok"}
        status = "failed" if service.load_error else "loading"
        body = {"status": status} if service.load_error is None else {"status": status, "detail": service.load_error}
        return JSONResponse(body, status_code=503)

    @app.get("/metrics", dependencies=auth, tags=["operations"], response_class=Response,
             responses={200: {"content": {CONTENT_TYPE_LATEST.split(";")[0]: {}},
                              "description": "Prometheus text format"}, 401: {"model": ErrorResponse}},
             summary="Prometheus metrics: requests, latency, queue depth, batch sizes")
    async def prometheus() -> Response:
        return Response(generate_latest(tel.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> Response:
        page = STATIC_DIR / "index.html"
        if page.is_file():
            return HTMLResponse(page.read_text(encoding="utf-8"))
        return HTMLResponse("<!doctype html><meta charset=utf-8><title>clipiq</title><h1>clipiq serve</h1>"
                            "<p>The web page is not installed (no clipiq/serve/static/index.html). The API is at "
                            "<a href=/docs>/docs</a>.</p>")

    app.mount("/static", StaticFiles(directory=STATIC_DIR, check_dir=False), name="static")
    return app


def _version() -> str:
    from clipiq import __version__

    return __version__
