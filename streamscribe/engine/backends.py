"""Picks and loads the model backend a configuration asks for.

Today: Whisper on CTranslate2 (CPU, or CUDA where CUDA 12 libraries exist). Other backends
(PyTorch for CUDA 13, a remote decode pool) plug in here behind the same `Transcriber` interface.
"""

from __future__ import annotations

from streamscribe.config import Settings
from streamscribe.engine.decoding import Transcriber
from streamscribe.engine.models import resolve_model


def load_transcriber(settings: Settings) -> Transcriber:
    from streamscribe.engine.whisper_ct2 import WhisperCT2Transcriber

    path = resolve_model(settings.model, settings.model_cache_dir)
    return WhisperCT2Transcriber(
        path,
        device=settings.device,
        compute_type=settings.compute_type,
        cpu_threads=settings.cpu_threads,
        num_workers=settings.decode_workers,
    )
