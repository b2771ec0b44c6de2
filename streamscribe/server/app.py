"""The application factory: wires settings, model, scheduler, store and routes together.

`create_app()` builds a FastAPI app whose lifespan opens the store (running migrations, closing
sessions a crash left open and repairing their recordings), loads the model once (in a thread)
and starts the shared decode scheduler; `run()` serves it with uvicorn and drains open sessions
on SIGTERM/SIGINT before exiting. A transcriber can be injected (tests, remote decode pools).
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from contextlib import asynccontextmanager
from pathlib import Path

import numpy as np
import uvicorn
from fastapi import Depends, FastAPI
from fastapi.responses import JSONResponse, Response

from streamscribe import __version__
from streamscribe.audio.wav import repair_wav_header
from streamscribe.config import Settings
from streamscribe.engine.decoding import DecodeRequest, Transcriber
from streamscribe.engine.scheduler import DecodeScheduler
from streamscribe.engine.schedulers import SchedulerRegistry
from streamscribe.errors import StreamscribeError
from streamscribe.logs import configure as configure_logging
from streamscribe.server import calls, dialects, rest
from streamscribe.server.auth import is_loopback, open_mode, require_metrics_access
from streamscribe.server.calls.job import end_interrupted_calls
from streamscribe.server.decoder_choice import load_transcriber
from streamscribe.server.rest.retention import retention_loop
from streamscribe.server.rest.uploads import resume_uploads, stop_uploads
from streamscribe.server.state import ServerState
from streamscribe.server.tls import TlsRefused, tls_files, trust_hint
from streamscribe.server.uvicorn_protocols import FlowControlledWebSocket, RequestDeadlineHttp
from streamscribe.store import Store

log = logging.getLogger("streamscribe")


class StartupRefused(RuntimeError):
    """The server must not start as configured; the message says what to change."""


async def _recover(store: Store) -> None:
    """Sessions a crash left open become 'abnormal': their recordings get a valid header and
    their audio is metered (from the recording when there is one). Sessions of upload jobs not
    finished are left alone: the job resumes or fails at start (`resume_uploads`), and an upload
    is metered only once its transcript is complete."""
    unfinished = {job.id for job in await store.unfinished_upload_jobs()}
    for session_id in await store.close_abandoned_sessions(keep=unfinished):
        detail = await store.get_session(session_id)
        if detail is None:
            continue
        seconds = detail.info.audio_seconds
        path = detail.info.recording_path
        if path and Path(path).exists():
            seconds = max(seconds, repair_wav_header(path) / 16000)
        await store.add_usage(detail.info.key_id, seconds)
        log.warning(
            "recovered session %s: %d turns, %.1f s audio", session_id, len(detail.turns), seconds
        )


async def check_startup(settings: Settings) -> None:
    """Refuse to serve a non-loopback address with no key (unless told to)."""
    if is_loopback(settings.host) or settings.insecure_no_auth:
        return
    store = await Store.open(settings.database_url, settings.data_dir)
    try:
        keys = await store.count_active_keys()
    finally:
        await store.close()
    if keys == 0:
        raise StartupRefused(
            f"refusing to serve {settings.host} without an API key: create one with "
            "`streamscribe keys create NAME`, or pass --insecure-no-auth"
        )


def create_app(settings: Settings | None = None, transcriber: Transcriber | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        store = await Store.open(settings.database_url, settings.data_dir)
        if (
            not is_loopback(settings.host)
            and not settings.insecure_no_auth
            and await store.count_active_keys() == 0
        ):
            await store.close()
            raise StartupRefused(
                f"refusing to serve {settings.host} without an API key: create one with "
                "`streamscribe keys create NAME`, or pass --insecure-no-auth"
            )
        await _recover(store)
        model = transcriber
        if model is None:
            log.info(
                "loading model %s (%s, %s)", settings.model, settings.device, settings.compute_type
            )
            model = await asyncio.to_thread(load_transcriber, settings)
        scheduler = DecodeScheduler(model, settings.max_batch_size, settings.decode_workers)
        await scheduler.start()
        if transcriber is None:
            # one warm-up decode (through the scheduler, the model's only caller) so the first
            # session does not pay for lazy initialisation
            await scheduler.submit(
                DecodeRequest(np.zeros(16000, dtype=np.float32)), "warm-up", kind="warm-up"
            )
        state = ServerState(settings=settings, transcriber=model, scheduler=scheduler, store=store)

        def observe(sched: DecodeScheduler) -> None:
            sched.on_batch = lambda n, s: (
                state.metrics.batch_size.observe(n),
                state.metrics.decode_seconds.observe(s),
            )

        observe(scheduler)
        state.models = SchedulerRegistry(
            settings.model,
            scheduler,
            lambda name: load_transcriber(settings.model_copy(update={"model": name})),
            settings.max_batch_size,
            settings.decode_workers,
        )
        state.models.on_new_scheduler = observe
        app.state.streamscribe = state
        if await open_mode(state):
            log.warning(
                "OPEN MODE: no API key exists, anyone who can reach %s:%s may transcribe; "
                "create a key with `streamscribe keys create NAME`",
                settings.host,
                settings.port,
            )
        await resume_uploads(app, state)
        await end_interrupted_calls(state)
        sweeper = asyncio.create_task(retention_loop(state)) if settings.retention_days else None
        log.info("streamscribe %s ready on %s:%s", __version__, settings.host, settings.port)
        try:
            yield
        finally:
            state.draining = True
            await _drain(state, settings.shutdown_grace_seconds)
            await stop_uploads(app)  # left queued, their uploads kept: resumed at the next start
            if sweeper is not None:
                sweeper.cancel()
            await state.models.stop()
            await store.close()

    docs = settings.public_docs  # False: no /docs, /redoc, /openapi.json at all
    app = FastAPI(
        title="streamscribe",
        version=__version__,
        lifespan=lifespan,
        docs_url="/docs" if docs else None,
        redoc_url="/redoc" if docs else None,
        openapi_url="/openapi.json" if docs else None,
    )
    for router in (*dialects.routers, *calls.routers, *rest.routers):
        app.include_router(router)

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        state: ServerState | None = getattr(app.state, "streamscribe", None)
        if state is None:
            return JSONResponse({"ready": False, "reason": "model loading"}, status_code=503)
        if state.draining:
            return JSONResponse({"ready": False, "reason": "shutting down"}, status_code=503)
        if not await state.store.ping():
            return JSONResponse({"ready": False, "reason": "database unreachable"}, status_code=503)
        if state.at_capacity:
            return JSONResponse({"ready": False, "reason": "at session capacity"}, status_code=503)
        if problem := await state.decoder_problem():
            return JSONResponse({"ready": False, "reason": problem}, status_code=503)
        return JSONResponse({"ready": True, "sessions": len(state.sessions)})

    @app.get("/metrics", dependencies=[Depends(require_metrics_access)])
    async def metrics() -> Response:
        """Prometheus text format."""
        state: ServerState = app.state.streamscribe
        state.metrics.decode_queue.set(state.scheduler.queued)
        state.metrics.lag.set(
            max((s.runner.lag_ms for s in state.sessions.values()), default=0) / 1000
        )
        return Response(state.metrics.render(), media_type=state.metrics.content_type)

    @app.get("/v1/metrics", dependencies=[Depends(require_metrics_access)])
    async def metrics_json() -> dict:
        """The same figures as JSON, for people and the benchmark."""
        return app.state.streamscribe.summary()

    @app.get("/v1/info")
    async def info() -> dict:
        """What this server is and serves (the page at `/` reads it to set itself up)."""
        state: ServerState = app.state.streamscribe
        extra = [settings.multilingual_model] if settings.multilingual_model else []
        return {
            "service": "streamscribe",
            "version": __version__,
            "model": settings.model,
            "models": list(dict.fromkeys([settings.model, *settings.models, *extra])),
            "multilingual": bool(extra) or state.transcriber.multilingual,
            "auth": "open" if await open_mode(state) else "key",
            "record_audio": settings.record_audio,
            "max_upload_bytes": settings.max_upload_bytes,
            "endpoints": {
                "page": "/",
                "assemblyai_v3": "/v3/ws",
                "token": "/v3/token",
                "assemblyai_v2": "/v2/realtime/ws",
                "deepgram": "/v1/listen",
                "openai_transcriptions": "/v1/audio/transcriptions",
                "openai_translations": "/v1/audio/translations",
                "openai_realtime": "/v1/realtime?intent=transcription",
                "fireworks": "/v1/audio/transcriptions/streaming",
                "azure_speech": "/speech/universal/v2",
                "calls": "/v1/calls",
                "sessions": "/v1/sessions",
                "uploads": "/v1/transcripts",
            },
            "approximated": dialects.approximated,  # accepted, done approximately
        }

    return app


async def _drain(state: ServerState, grace_s: float) -> None:
    """Wait for open sessions to flush their last turns and close (bounded by `grace_s`)."""
    deadline = time.monotonic() + grace_s
    while state.sessions and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    if state.sessions:
        log.error("%d sessions still open after %.0f s of grace", len(state.sessions), grace_s)


class _GracefulServer(uvicorn.Server):
    """On the first SIGTERM/SIGINT, let open sessions finish before uvicorn closes sockets.

    uvicorn's own shutdown closes WebSockets with 1012 at once; streamscribe first stops
    admitting sessions, lets each open one flush its final turn and send its Termination, and
    only then lets uvicorn shut down (a second signal exits at once).
    """

    def __init__(self, config: uvicorn.Config, app: FastAPI, grace_s: float) -> None:
        super().__init__(config)
        self._app = app
        self._grace_s = grace_s
        self._draining = False

    def handle_exit(self, sig: int, frame) -> None:  # type: ignore[override]
        # a stop asked for is a clean exit (status 0), with or without sessions to drain
        if self.should_exit or self._draining:
            self.force_exit = True
            return
        state: ServerState | None = getattr(self._app.state, "streamscribe", None)
        if state is None or not state.sessions:
            self.should_exit = True
            return
        self._draining = True
        state.draining = True
        log.info("shutting down: letting %d open sessions finish", len(state.sessions))
        loop = asyncio.get_event_loop()
        loop.call_soon_threadsafe(lambda: loop.create_task(self._finish(state)))

    async def _finish(self, state: ServerState) -> None:
        await _drain(state, self._grace_s)
        self.should_exit = True


def run(settings: Settings) -> None:
    """Serve until interrupted (the `streamscribe serve` command)."""
    configure_logging(settings.log_level)
    try:
        tls = tls_files(settings)
    except TlsRefused as exc:
        raise SystemExit(f"streamscribe: {exc}") from None
    try:
        asyncio.run(check_startup(settings))
    except StartupRefused as exc:
        raise SystemExit(f"streamscribe: {exc}") from None
    transcriber = None
    if settings.decoder.strip().lower() != "local":
        # a remote decode pool is joined before serving: a wrong address, a pool not started
        # or still starting is one clear line naming the fix (each step has a timeout)
        try:
            transcriber = load_transcriber(settings)
        except StreamscribeError as exc:
            raise SystemExit(f"streamscribe: {exc}") from None
    app = create_app(settings, transcriber)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        log_config=None,
        ws_max_size=settings.max_frame_bytes,
        ws=FlowControlledWebSocket,
        http=RequestDeadlineHttp.bounded(settings),
        ws_ping_interval=20,
        ws_ping_timeout=20,
        **(tls.uvicorn_options() if tls else {}),
    )
    if tls is not None:
        log.info("serving https://%s:%s (wss:// for streams)", settings.host, settings.port)
        if hint := trust_hint(tls):
            print(hint, file=sys.stderr, flush=True)
    server = _GracefulServer(config, app, settings.shutdown_grace_seconds)
    try:
        server.run()
    except StartupRefused as exc:
        raise SystemExit(f"streamscribe: {exc}") from None
