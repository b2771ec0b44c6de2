"""The decode replica: one model behind a Ray Serve deployment, batching across front-ends.

Why it exists: every front-end's scheduler sends its requests here, so requests from different
machines share one model call (`@serve.batch`). Finals and partials are batched apart, and a
partial batch waits while any final is queued or decoding on the replica, so finals keep their
priority across the pool. The model runs in a worker thread so the replica keeps accepting
requests (and health checks) while it decodes.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from ray import serve

from streamscribe.config import Settings
from streamscribe.engine.backends import load_local_transcriber
from streamscribe.engine.decoding import DecodeRequest, DecodeResult

log = logging.getLogger("streamscribe.pool")

DEPLOYMENT_NAME = "DecodeReplica"


@dataclass(frozen=True)
class PoolOptions:
    """How `streamscribe pool up` shapes the deployment."""

    replicas: int = 1
    max_replicas: int | None = None  # above `replicas`: autoscale between the two
    max_batch_size: int = 8
    batch_wait_ms: float = 10.0
    target_ongoing_requests: float = 4.0  # per replica, what autoscaling aims for
    num_cpus: float = 1.0  # per replica on CPU nodes


class DecodeReplica:
    """One model replica (wrapped by `serve.deployment` in `build_app`)."""

    def __init__(self, settings: dict[str, Any], max_batch_size: int, batch_wait_s: float) -> None:
        self.settings = Settings(**settings)
        self.transcriber = load_local_transcriber(self.settings)
        self._model = asyncio.Lock()  # one model call at a time on this replica
        self._finals = 0  # finals queued or decoding here
        self._no_finals = asyncio.Event()
        self._no_finals.set()
        for method in (self._final_batch, self._partial_batch):
            method.set_max_batch_size(max_batch_size)
            method.set_batch_wait_timeout_s(batch_wait_s)
        log.info("decode replica ready: %s (%s)", self.settings.model, self.settings.device)

    def info(self) -> dict[str, Any]:
        return {
            "model": self.settings.model,
            "backend": self.settings.backend,
            "device": self.settings.device,
            "sample_rate": self.transcriber.sample_rate,
            "multilingual": self.transcriber.multilingual,
        }

    async def decode(self, request: DecodeRequest) -> DecodeResult:
        if not request.final:
            return await self._partial_batch(request)
        self._finals += 1
        self._no_finals.clear()
        try:
            return await self._final_batch(request)
        finally:
            self._finals -= 1
            if self._finals == 0:
                self._no_finals.set()

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01)
    async def _final_batch(self, requests: list[DecodeRequest]) -> list[DecodeResult]:
        async with self._model:
            return await asyncio.to_thread(self.transcriber.transcribe_batch, requests)

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01)
    async def _partial_batch(self, requests: list[DecodeRequest]) -> list[DecodeResult]:
        while True:
            await self._no_finals.wait()
            async with self._model:
                if self._finals:  # a final arrived while this batch waited for the model
                    continue
                return await asyncio.to_thread(self.transcriber.transcribe_batch, requests)


def build_app(settings: Settings, options: PoolOptions) -> serve.Application:
    """The Serve application: `options.replicas` replicas (autoscaled up to `max_replicas`),
    one GPU each when the device is cuda."""
    gpu = settings.device.strip().lower().startswith("cuda")
    actor_options: dict[str, Any] = {"num_gpus": 1} if gpu else {"num_cpus": options.num_cpus}
    config: dict[str, Any] = {
        "name": DEPLOYMENT_NAME,
        "ray_actor_options": actor_options,
        "max_ongoing_requests": max(16, options.max_batch_size * 4),
        "health_check_period_s": 2.0,
        "health_check_timeout_s": 30.0,
    }
    if options.max_replicas and options.max_replicas > options.replicas:
        config["autoscaling_config"] = {
            "min_replicas": options.replicas,
            "max_replicas": options.max_replicas,
            "target_ongoing_requests": options.target_ongoing_requests,
        }
    else:
        config["num_replicas"] = options.replicas
    replica_settings = settings.model_dump(
        include={"model", "backend", "device", "compute_type", "cpu_threads", "data_dir"}
    )
    replica_settings["data_dir"] = str(settings.data_dir.expanduser().resolve())
    replica_settings["decoder"] = "local"  # a replica decodes itself, whatever its env says
    return serve.deployment(**config)(DecodeReplica).bind(
        replica_settings, options.max_batch_size, options.batch_wait_ms / 1000
    )
