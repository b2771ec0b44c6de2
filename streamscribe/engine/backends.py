"""Picks and loads the in-process model backend a configuration asks for.

`ct2` (default): Whisper on CTranslate2 (CPU, or CUDA where CUDA 12 libraries exist).
`torch`: Whisper on PyTorch (CPU, or any CUDA version PyTorch supports, with CUDA graphs); it
reads the same model directories.

What lives elsewhere: whether the model runs in this process at all (`--decoder local`) or on
the shared Ray Serve decode pool (`--decoder ray`) is wiring, chosen where the app is assembled
(`streamscribe.server.decoder_choice`); the engine never imports the pool, which is a client of
the engine (each pool replica loads its model with this module). How a model name becomes files
is `model_files.py`'s.
"""

from __future__ import annotations

import importlib.util

from streamscribe.config import Settings
from streamscribe.engine.decoding import Transcriber
from streamscribe.engine.host_threads import limit_blas_threads
from streamscribe.engine.model_files import resolve_model
from streamscribe.errors import StreamscribeError

BACKENDS = ("ct2", "torch")


def load_local_transcriber(settings: Settings) -> Transcriber:
    """The model `settings` names, loaded in this process on the backend it names
    (`settings.decoder` is not read here: see `streamscribe.server.decoder_choice`)."""
    backend = settings.backend.strip().lower()
    if backend not in BACKENDS:
        raise StreamscribeError(
            f"unknown backend {settings.backend!r}: pass --backend ct2 (CTranslate2) or "
            "--backend torch (PyTorch)"
        )
    path = resolve_model(settings.model, settings.model_cache_dir)
    limit_blas_threads(settings.blas_threads)
    if backend == "torch":
        return _load_torch(path, settings)

    from streamscribe.engine.whisper_ct2 import WhisperCT2Transcriber

    return WhisperCT2Transcriber(
        path,
        device=settings.device,
        compute_type=settings.compute_type,
        cpu_threads=settings.cpu_threads,
        num_workers=settings.decode_workers,
    )


def _load_torch(path: str, settings: Settings) -> Transcriber:
    if importlib.util.find_spec("torch") is None:
        raise StreamscribeError(
            "--backend torch needs PyTorch: pip install 'streamscribe[gpu]' (or a torch build "
            "for your CUDA from https://pytorch.org), or use --backend ct2"
        )
    from streamscribe.engine.whisper_torch.transcriber import WhisperTorchTranscriber

    return WhisperTorchTranscriber(
        path,
        device=settings.device,
        compute_type=settings.compute_type,
        cpu_threads=settings.cpu_threads,
        encoder=settings.torch_encoder,
    )
