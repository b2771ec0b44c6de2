"""Live speaker labels: an embedding per turn (and per voice inside a turn), online clustering.

Importing this package imports neither torch nor resemblyzer; the encoder loads them on first
use and raises `SpeakerModelUnavailableError` naming `pip install 'streamscribe[speakers]'`
when they are missing. `SessionSpeakers` is what the engine holds per session.
"""

from streamscribe.speakers.clustering import (
    SpeakerSettings,
    SpeakerTracker,
    dominant_label,
    speaker_label,
)
from streamscribe.speakers.encoder import SpeakerEncoder, is_available, shared_encoder
from streamscribe.speakers.session import SessionSpeakers
from streamscribe.speakers.turns import TurnEmbeddings, WordSpan, embed_turn

__all__ = [
    "SessionSpeakers",
    "SpeakerEncoder",
    "SpeakerTracker",
    "SpeakerSettings",
    "TurnEmbeddings",
    "WordSpan",
    "dominant_label",
    "embed_turn",
    "is_available",
    "shared_encoder",
    "speaker_label",
]
