"""The application factory: wires settings, model, scheduler, store and routes together.

`create_app()` builds a FastAPI app whose lifespan loads the model once (in a thread, so start-up
stays responsive) and starts the shared decode scheduler; `run()` serves it with uvicorn.
A transcriber can be injected (tests, remote decode pools) instead of loading one.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager

import numpy as np
import uvicorn
from fastapi import FastAPI
from fastapi.responses import JSONResponse

from streamscribe import __version__
from streamscribe.config import Settings
from streamscribe.engine.backends import load_transcriber
from streamscribe.engine.decoding import DecodeRequest, Transcriber
from streamscribe.engine.scheduler import DecodeScheduler
from streamscribe.server import routes_v3
from streamscribe.server.state import ServerState
from streamscribe.store.transcripts import TranscriptLog

log = logging.getLogger("streamscribe")


def create_app(settings: Settings | None = None, transcriber: Transcriber | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        model = transcriber
        if model is None:
            log.info(
                "loading model %s (%s, %s)", settings.model, settings.device, settings.compute_type
            )
            model = await asyncio.to_thread(load_transcriber, settings)
            # one warm-up decode so the first session does not pay for lazy initialisation
            await asyncio.to_thread(
                model.transcribe_batch, [DecodeRequest(np.zeros(16000, dtype=np.float32))]
            )
        scheduler = DecodeScheduler(model, settings.max_batch_size, settings.decode_workers)
        await scheduler.start()
        app.state.streamscribe = ServerState(
            settings=settings,
            transcriber=model,
            scheduler=scheduler,
            transcripts=TranscriptLog(settings.data_dir),
        )
        log.info("streamscribe %s ready on %s:%s", __version__, settings.host, settings.port)
        try:
            yield
        finally:
            await scheduler.stop()

    app = FastAPI(title="streamscribe", version=__version__, lifespan=lifespan)
    app.include_router(routes_v3.router)

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        state: ServerState | None = getattr(app.state, "streamscribe", None)
        if state is None:
            return JSONResponse({"ready": False, "reason": "model loading"}, status_code=503)
        if state.at_capacity:
            return JSONResponse({"ready": False, "reason": "at session capacity"}, status_code=503)
        return JSONResponse({"ready": True, "sessions": len(state.sessions)})

    @app.get("/metrics")
    async def metrics() -> dict:
        return app.state.streamscribe.metrics()

    @app.get("/")
    async def index() -> dict:
        return {
            "service": "streamscribe",
            "version": __version__,
            "model": settings.model,
            "endpoints": {"assemblyai_v3": "/v3/ws", "metrics": "/metrics"},
        }

    return app


def run(settings: Settings) -> None:
    """Serve until interrupted (the `streamscribe serve` command)."""
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        ws_ping_interval=20,
        ws_ping_timeout=20,
    )
