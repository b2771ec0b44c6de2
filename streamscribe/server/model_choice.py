"""Which model serves a session: the default, the multilingual one, or one the client named.

Clients name models in their vendor's vocabulary (`universal-streaming-english`, `nova-3`,
`whisper-1`): a name we do not serve is not an error, it means "your best model", except that a
session that needs languages (a language other than English, detection, translation) must get a
multilingual model — and if none is installed, the client is told how to get one.
"""

from __future__ import annotations

from streamscribe.config import Settings
from streamscribe.errors import PeerError
from streamscribe.events import ErrorKind, SessionConfig


def needs_multilingual(config: SessionConfig) -> bool:
    language = config.turn.get("language")
    return (
        (language is not None and language != "en")
        or config.language_detection
        or bool(config.turn.get("translate"))
        or "multilingual" in (config.model or "")
    )


def choose_model(settings: Settings, config: SessionConfig, default_multilingual: bool) -> str:
    """The model name for this session; raises ProtocolError when no served model fits."""
    served = [settings.model, *settings.models]
    if settings.multilingual_model:
        served.append(settings.multilingual_model)
    chosen = config.model if config.model in served else settings.model
    if needs_multilingual(config) and chosen == settings.model and not default_multilingual:
        if not settings.multilingual_model:
            raise PeerError(
                ErrorKind.BAD_REQUEST,
                f"{_why(config)} needs a multilingual model and the server's model "
                f"{settings.model!r} is English-only: start it with --model base",
            )
        chosen = settings.multilingual_model
    return chosen


def _why(config: SessionConfig) -> str:
    language = config.turn.get("language")
    if language is not None and language != "en":
        return f"Language {language!r}"
    if config.language_detection:
        return "Language detection"
    if config.turn.get("translate"):
        return "Translation"
    return f"Model {config.model!r}"
