"""Where the app's decoder comes from: the model in this process, or the shared decode pool.

Why it exists: choosing local or Ray decoding is wiring, not streaming policy, so it is made
where the app is assembled (the server and the CLI), and the engine never imports the pool
(`.importlinter`: "engine never imports pool"). The pool is the engine's client, not its part:
it imports the engine's decode contract and, on each replica, the engine's local backend.

What lives elsewhere: which local backend (CTranslate2 or PyTorch) and how a model name becomes
files is the engine's (`engine/backends.py`, `engine/model_files.py`); the pool's client, its
timeouts and retries are `pool/client.py`'s; which model a session gets is `model_choice.py`'s.
"""

from __future__ import annotations

from streamscribe.config import Settings
from streamscribe.engine.backends import load_local_transcriber
from streamscribe.engine.decoding import Transcriber
from streamscribe.errors import StreamscribeError

DECODERS = ("local", "ray")


def load_transcriber(settings: Settings) -> Transcriber:
    """The `Transcriber` `settings.decoder` asks for: `local` loads the model here (the backend
    `settings.backend` names), `ray` joins the decode pool started with `streamscribe pool up`."""
    decoder = settings.decoder.strip().lower()
    if decoder == "ray":
        from streamscribe.pool.client import load_pool_transcriber

        return load_pool_transcriber(settings)
    if decoder != "local":
        raise StreamscribeError(
            f"unknown decoder {settings.decoder!r}: pass --decoder local (the model in this "
            "process) or --decoder ray (a shared pool started with `streamscribe pool up`)"
        )
    return load_local_transcriber(settings)
