"""The serving app (FastAPI): several registered models behind one server, routed by family.

=====================  ======================================================================
endpoint               answer
=====================  ======================================================================
``GET /health``        200 ``ready`` / ``degraded`` (serving, but an alias was removed, MLflow is
                       unreachable or a newer version failed to load); 503 ``loading`` /
                       ``unavailable`` while some model has no version loaded. Per model: state,
                       version, detail sentence.
``GET /model``         per model: name, alias, version, family, task, gate metric and decision,
                       data version (``data.dvc_md5``), git commit, run metrics, threshold
``GET /metrics``       Prometheus text (:mod:`seqflow.serve.metrics`)
``POST /v1/detect``    trigger word (``trigger_word*`` families): ``{"detections": [{"start", "end",
                       "score"}], ...}``; query ``model=<name>``, ``threshold=<0..1>``
``POST /v1/transcribe``  ASR (``ctc`` / ``transformer``): ``{"text", ...}``; query ``model=<name>``
``WS /v1/stream``      streaming detection (:mod:`seqflow.serve.streaming`)
=====================  ======================================================================

POST bodies: raw WAV/FLAC/OGG bytes, a multipart upload, or JSON ``{"audio": [...], "sample_rate": N}``
(:mod:`seqflow.serve.audio_input`). Every HTTP answer carries ``X-Request-ID`` (and
``request_id`` in its JSON); answers that reached a model carry ``X-Model-Version`` and
``model_version``. Errors are JSON with one line (``{"error", "reason", "status", "request_id",
"model_version"}``), never a traceback. Model calls run on a thread pool of
``serve.concurrency.model_threads`` threads, so the event loop never runs a model; more than
``max_pending`` calls at once → 503 ``busy``.

>>> app = create_app([ModelSlot(ModelRef.parse(uri))], ServeSettings(), tracking_uri)
>>> uvicorn.run(app, host="127.0.0.1", port=8080)
"""

from __future__ import annotations

import asyncio
import logging
import threading
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, WebSocket
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from seqflow.serve.audio_input import AudioIn, body_kind, from_bytes, from_json
from seqflow.serve.errors import ApiError
from seqflow.serve.metrics import ServeMetrics
from seqflow.serve.middleware import BodyTooLarge, RequestContext, error_body
from seqflow.serve.models import AliasFollower, LoadedModel, ModelSlot
from seqflow.serve.settings import ServeSettings
from seqflow.serve.streaming import serve_stream

log = logging.getLogger("seqflow.serve")
PATHS = ("/health", "/model", "/metrics", "/v1/detect", "/v1/transcribe", "/v1/stream")
TASK_WORDS = {"detect": "trigger-word", "transcribe": "speech-recognition"}


class ServeState:
    """What every endpoint shares: the model slots, settings, metrics, the model thread pool and
    the VAD gate (loaded on first use when ``settings.vad_enabled``)."""

    def __init__(self, slots: Sequence[ModelSlot], settings: ServeSettings) -> None:
        self.slots, self.settings = list(slots), settings
        self.metrics = ServeMetrics()
        self.executor = ThreadPoolExecutor(max_workers=settings.model_threads, thread_name_prefix="seqflow-model")
        self.inflight = 0
        self._vad = None
        self._vad_lock = threading.Lock()

    @property
    def vad(self):
        """The :class:`seqflow.serve.vad.VadGate` (loaded once, thread-safe)."""
        with self._vad_lock:
            if self._vad is None:
                from seqflow.serve.vad import VadGate

                s = self.settings
                self._vad = VadGate(s.vad_threshold, s.vad_lookback_s, s.vad_warmup_s)
            return self._vad

    def pick(self, task: str, name: str | None = None) -> LoadedModel:
        """The loaded model answering ``task`` (``detect`` | ``transcribe``): the one named ``name``,
        else the first slot of that task.

        Raises:
            ApiError: 404 (no such model / no model of that family), 400 (``name`` is of the other
            family), 503 (the model has no version loaded yet; the message says why).
        """
        served = ", ".join(s.ref.name for s in self.slots)
        if name:
            slots = [s for s in self.slots if s.ref.name == name]
            if not slots:
                raise ApiError(404, "unknown_model", f"no served model named {name!r} (serving: {served})")
        else:
            slots = [s for s in self.slots if s.current is None or s.current.task == task]
        for s in slots:
            cur = s.current
            if cur is not None and cur.task == task:
                return cur
            if cur is not None and name:
                raise ApiError(400, "wrong_family", f"{name} is a {TASK_WORDS[cur.task]} model "
                                                    f"({cur.family}); use /v1/{cur.task}")
        pending = [s for s in slots if s.current is None]
        if pending:
            raise ApiError(503, "not_ready", "; ".join(f"{s.ref.uri}: {s.status()['detail']}" for s in pending))
        raise ApiError(404, "no_model_for_task", f"this server holds no {TASK_WORDS[task]} model (serving: {served})")

    async def run_model(self, fn, *args) -> Any:
        """Run ``fn(*args)`` on the model thread pool; 503 ``busy`` past ``max_pending`` calls."""
        if self.inflight >= self.settings.max_pending:
            raise ApiError(503, "busy", f"{self.inflight} model calls pending (limit {self.settings.max_pending}); "
                                        "retry shortly")
        self.inflight += 1
        self.metrics.inflight.set(self.inflight)
        try:
            return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)
        finally:
            self.inflight -= 1
            self.metrics.inflight.set(self.inflight)

    def health(self) -> tuple[int, dict]:
        """``(HTTP status, body)`` of ``GET /health`` (see the module doc)."""
        statuses = [s.status() for s in self.slots]
        if all(st["version"] is not None for st in statuses):
            status = "degraded" if any(st["stale"] for st in statuses) else "ready"
            code = 200
        else:
            waiting = any(st["state"] in ("loading",) for st in statuses)
            status, code = ("loading" if waiting else "unavailable"), 503
        reach = [st["mlflow_reachable"] for st in statuses]
        mlflow = "unknown" if any(r is None for r in reach) else ("reachable" if all(reach) else "unreachable")
        return code, {"status": status, "mlflow": mlflow, "vad_gate": self.settings.vad_enabled, "models": statuses}


def _json(request: Request, body: dict, status: int = 200) -> JSONResponse:
    state = request.state
    return JSONResponse({"request_id": getattr(state, "request_id", None),
                         "model_version": getattr(state, "model_version", None), **body}, status_code=status)


def _error(request: Request, status: int, reason: str, message: str) -> Response:
    body = error_body(status, reason, message, getattr(request.state, "request_id", None),
                      getattr(request.state, "model_version", None))
    return Response(body, status_code=status, media_type="application/json")


async def _read_audio(request: Request, st: ServeState, sample_rate: int) -> AudioIn:
    """The request's audio (any of the three body shapes) at ``sample_rate``; decoding runs off the loop."""
    kind = body_kind(request.headers.get("content-type"))
    limit_s = st.settings.max_audio_s
    if kind == "multipart":
        form = await request.form(max_files=1, max_fields=16)
        try:
            upload = next((v for v in form.values() if isinstance(v, UploadFile)), None)
            if upload is None:
                raise ApiError(400, "empty", "the multipart body has no file part (send -F file=@clip.wav)")
            data = await upload.read()
        finally:
            await form.close()
        return await asyncio.to_thread(from_bytes, data, sample_rate, limit_s, "multipart")
    body = await request.body()
    if kind == "json":
        return await asyncio.to_thread(from_json, body, sample_rate, limit_s)
    return await asyncio.to_thread(from_bytes, body, sample_rate, limit_s)


def _audio_meta(a: AudioIn) -> dict:
    return {"duration_s": round(a.duration_s, 4), "sample_rate_in": a.sample_rate_in, "channels": a.channels,
            "source": a.source}


def create_app(slots: Sequence[ModelSlot], settings: ServeSettings, tracking_uri: str | None = None,
               onnx: bool = False) -> FastAPI:
    """Build the app. With ``tracking_uri``, the app's lifespan runs an :class:`AliasFollower` over
    ``slots`` (loading, alias following, back-off); without it the caller fills the slots."""
    st = ServeState(slots, settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        follower = None
        if tracking_uri is not None:
            follower = AliasFollower(st.slots, tracking_uri, settings.poll_interval_s, settings.retry_initial_s,
                                     settings.retry_max_s, onnx=onnx, on_refresh=st.metrics.update_models,
                                     warmup=lambda: _warmup(st)).start()
        try:
            yield
        finally:
            if follower is not None:
                follower.stop()
            st.executor.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="seqflow serve", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.serve = st
    app.add_middleware(RequestContext, max_body_bytes=settings.max_body_bytes, metrics=st.metrics,
                       paths=frozenset(PATHS))

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> Response:
        st.metrics.errors.labels(_endpoint(request), exc.reason).inc()
        return _error(request, exc.status, exc.reason, str(exc))

    @app.exception_handler(BodyTooLarge)
    async def _too_large(request: Request, exc: BodyTooLarge) -> Response:
        st.metrics.errors.labels(_endpoint(request), "body_too_large").inc()
        return _error(request, 413, "body_too_large", str(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        reason = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "bad_request")
        st.metrics.errors.labels(_endpoint(request), reason).inc()
        return _error(request, exc.status_code, reason, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        e = (exc.errors() or [{}])[0]
        where = ".".join(str(x) for x in e.get("loc", ()) if x not in ("query", "body"))
        st.metrics.errors.labels(_endpoint(request), "invalid_parameter").inc()
        return _error(request, 422, "invalid_parameter", f"{where}: {e.get('msg', 'invalid')}")

    @app.get("/health")
    async def health(request: Request) -> JSONResponse:
        code, body = st.health()
        return _json(request, body, code)

    @app.get("/model")
    async def model(request: Request) -> JSONResponse:
        out = []
        for s in st.slots:
            cur, info = s.current, s.status()
            entry = {"uri": s.ref.uri, "name": s.ref.name, "alias": s.ref.alias, "version": info["version"],
                     "state": info["state"], "detail": info["detail"]}
            if cur is not None:
                entry.update(family=cur.family, task=cur.task, sample_rate=cur.sample_rate, **cur.info)
            out.append(entry)
        return _json(request, {"models": out})

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(st.metrics.render(), media_type=st.metrics.content_type)

    @app.post("/v1/detect")
    async def detect(request: Request, model: str | None = None, threshold: float | None = None) -> JSONResponse:
        loaded = st.pick("detect", model)
        request.state.model_version = loaded.version
        if threshold is not None and not 0.0 <= threshold <= 1.0:
            raise ApiError(422, "invalid_parameter", f"threshold must be in [0, 1], got {threshold:g}")
        audio = await _read_audio(request, st, loaded.sample_rate)
        gate = st.vad if settings.vad_enabled else None
        dets = await st.run_model(_detect, loaded, audio, threshold, gate, st.metrics.vad_gate)
        st.metrics.audio_seconds.labels("/v1/detect").inc(audio.duration_s)
        th = loaded.engine.threshold if threshold is None else threshold
        return _json(request, {"model": loaded.ref.name, "alias": loaded.ref.alias, "detections": dets,
                               "threshold": float(th), "vad_gate": gate is not None, "audio": _audio_meta(audio)})

    @app.post("/v1/transcribe")
    async def transcribe(request: Request, model: str | None = None) -> JSONResponse:
        loaded = st.pick("transcribe", model)
        request.state.model_version = loaded.version
        audio = await _read_audio(request, st, loaded.sample_rate)
        text = await st.run_model(loaded.engine.transcribe, audio.wav)
        st.metrics.audio_seconds.labels("/v1/transcribe").inc(audio.duration_s)
        return _json(request, {"model": loaded.ref.name, "alias": loaded.ref.alias, "text": text,
                               "audio": _audio_meta(audio)})

    @app.websocket("/v1/stream")
    async def stream(ws: WebSocket) -> None:
        await serve_stream(ws, st)

    return app


def _endpoint(request: Request) -> str:
    return getattr(request.scope.get("route"), "path", None) or "other"


def _detect(loaded: LoadedModel, audio: AudioIn, threshold: float | None, gate, counter) -> list[dict]:
    dets = loaded.engine.detect(audio.wav, threshold=threshold)
    if gate is not None:
        dets = gate.filter(audio.wav, dets, counter=counter)
    return [{k: (float(v) if k != "vad_speech_prob" else v) for k, v in d.items()} for d in dets]


def _warmup(st: ServeState) -> None:
    """Runs once on the follower thread before the first load (while /health already answers):
    torch threads, the imports every model load needs (torch, MLflow's pyfunc, both wrappers and
    the log-mel filterbank code: seconds on a busy machine), the VAD gate."""
    import torch

    if st.settings.torch_threads:
        torch.set_num_threads(int(st.settings.torch_threads))
    with warnings.catch_warnings():  # MLflow's "add type hints to predict" hint on the wrapper classes
        warnings.simplefilter("ignore", UserWarning)
        import librosa.filters  # noqa: F401 - LogMel's filterbank, imported lazily by librosa
        import mlflow.pyfunc  # noqa: F401

        import seqflow.tracking.pyfunc  # noqa: F401
        import seqflow.tracking.pyfunc_embedding  # noqa: F401
    if st.settings.vad_enabled:
        _ = st.vad
