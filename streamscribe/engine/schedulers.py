"""One scheduler per model a server process decodes with (`SchedulerRegistry`).

The default model is loaded at start; others (the multilingual model a session asks for by
language, a model a session names) are loaded the first time a session needs them and kept.
Every model has exactly one scheduler, so sessions on the same model still batch together.

What lives elsewhere: how a model name becomes files (`model_files.py`), how files become a
`Transcriber` (the `loader` the server passes in: `server/decoder_choice.py`), which model a
session gets (`server/model_choice.py`), and the scheduling itself (`scheduler.py`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from streamscribe.engine.decoding import Transcriber
from streamscribe.engine.scheduler import DecodeScheduler

log = logging.getLogger(__name__)

Loader = Callable[[str], Transcriber]


class SchedulerRegistry:
    """The scheduler of each model in use, keyed by model name; loads a model on first use."""

    def __init__(
        self,
        default_name: str,
        default: DecodeScheduler,
        loader: Loader,
        max_batch_size: int = 8,
        workers: int = 1,
    ) -> None:
        self.default_name = default_name
        self._schedulers: dict[str, DecodeScheduler] = {default_name: default}
        self._loader = loader
        self._lock = asyncio.Lock()
        self._max_batch_size = max_batch_size
        self._workers = workers
        self.on_new_scheduler: Callable[[DecodeScheduler], None] | None = None

    @property
    def default(self) -> DecodeScheduler:
        return self._schedulers[self.default_name]

    @property
    def loaded(self) -> dict[str, DecodeScheduler]:
        return dict(self._schedulers)

    async def scheduler(self, name: str | None) -> DecodeScheduler:
        """The scheduler of model `name` (None: the default), loading the model on first use.

        Raises whatever the loader raises (`ModelNotFoundError` names the fix)."""
        if name is None or name == self.default_name:
            return self.default
        if name in self._schedulers:
            return self._schedulers[name]
        async with self._lock:
            if name not in self._schedulers:
                log.info("loading model %s for a session that asked for it", name)
                transcriber = await asyncio.to_thread(self._loader, name)
                scheduler = DecodeScheduler(transcriber, self._max_batch_size, self._workers)
                await scheduler.start()
                if self.on_new_scheduler is not None:
                    self.on_new_scheduler(scheduler)
                self._schedulers[name] = scheduler
        return self._schedulers[name]

    async def stop(self) -> None:
        for scheduler in self._schedulers.values():
            await scheduler.stop()
