"""The one protocol-neutral vocabulary between the engine and the wire dialects.

Commands flow from a client (through a protocol adapter) into the engine; events flow from
the engine out to every adapter, which renders them in its own wire format. Times are integer
milliseconds from the start of the stream; each adapter converts to its own unit. Nothing here
knows about any wire protocol, socket or model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol, TypeVar

import numpy as np

# ---------------------------------------------------------------- session setup


@dataclass(frozen=True, slots=True)
class AudioFormat:
    """What a client's binary frames hold, as negotiated by its protocol."""

    encoding: str = "pcm_s16le"  # pcm_s16le | pcm_mulaw | pcm_alaw
    sample_rate: int = 16000
    channels: int = 1


@dataclass(frozen=True, slots=True)
class SessionConfig:
    """Everything a dialect negotiated, in protocol-neutral terms.

    `turn` holds streaming-policy settings by their engine names (min_turn_silence_ms,
    max_turn_silence_ms, end_of_turn_confidence_threshold, format_turns, keyterms, prompt,
    language, vad_threshold); the server turns it into the engine's settings object.
    """

    audio: AudioFormat = field(default_factory=AudioFormat)
    turn: dict[str, Any] = field(default_factory=dict)
    inactivity_timeout_s: float | None = None
    max_session_s: float | None = None
    language_detection: bool = False
    speaker_labels: bool = False
    max_speakers: int | None = None  # cap on distinct speakers (None: the engine's default)
    model: str | None = None
    record: bool = True  # keep a recording of the session's audio (where the server records)
    # emit `AudioProgress` every so many ms of audio received (None: never); for dialects that
    # speak on the audio clock even in silence (AssemblyAI v2's empty partial transcripts)
    progress_interval_ms: int | None = None


# ---------------------------------------------------------------- commands (client -> engine)


@dataclass(frozen=True, slots=True)
class RawAudio:
    """Audio bytes exactly as the client sent them, in the session's `AudioFormat`."""

    data: bytes


@dataclass(frozen=True, slots=True)
class AudioFormatSettled:
    """The dialect learned the stream's audio format after connect (a WAV header in the first
    binary frame, a `session.update` naming G.711): `RawAudio` after this command is in `audio`.
    Only valid before the first `RawAudio`."""

    audio: AudioFormat


@dataclass(frozen=True, slots=True)
class Audio:
    """Audio already converted at the edge: float32 mono 16 kHz samples of one channel."""

    samples: np.ndarray
    channel: int = 0


@dataclass(frozen=True, slots=True)
class ForceEndpoint:
    """End the current turn now (channel None: on every channel).

    With a `marker`, the engine answers with `Flushed(marker)` once every turn that the force
    ended has been emitted as final: the flush acknowledgement some dialects send (Fireworks
    checkpoints, OpenAI Realtime manual commits, Deepgram Finalize).
    """

    channel: int | None = None
    marker: str | None = None


@dataclass(frozen=True, slots=True)
class UpdateConfig:
    """Change turn settings mid-session; keys are `TurnSettings` field names."""

    changes: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class KeepAlive:
    """Resets the inactivity timer; nothing else."""


@dataclass(frozen=True, slots=True)
class Terminate:
    """Graceful end: flush every turn in flight, then end the session."""


Command = (
    RawAudio | AudioFormatSettled | Audio | ForceEndpoint | UpdateConfig | KeepAlive | Terminate
)

# ---------------------------------------------------------------- events (engine -> client)


@dataclass(frozen=True, slots=True)
class Word:
    text: str
    start_ms: int
    end_ms: int
    confidence: float
    final: bool
    speaker: str | None = None


class _Labelled(Protocol):
    @property
    def speaker(self) -> str | None: ...


W = TypeVar("W", bound=_Labelled)


def speaker_runs(
    words: Sequence[W],
    min_words: int = 2,
    times: Callable[[W], tuple[int, int]] | None = None,
) -> list[tuple[str | None, list[W]]]:
    """A turn's words cut where the speaker changes, each run with its speaker (a phrase each, as
    Azure's conversation transcriber sends them: our turns end on silence, so a reply with no
    pause before it shares a turn with what it answers). A run of fewer than `min_words` words
    is a label flicker, not a change, and joins its neighbour; unlabelled words stay with the
    run before them. With `times` ((start, end) of a word), a cut moves to the longest pause
    within two words of it: labels near a change of voice are often a word off, pauses are not.
    """
    runs: list[list[W]] = []
    for w in words:
        if runs and (not w.speaker or w.speaker == runs[-1][-1].speaker):
            runs[-1].append(w)
        else:
            runs.append([w])
    kept: list[tuple[str | None, list[W]]] = []
    for run in runs:
        if kept and len(run) < min_words:
            kept[-1][1].extend(run)
        else:
            kept.append((run[0].speaker, run))
    if len(kept) > 1 and len(kept[0][1]) < min_words:
        kept[1] = (kept[1][0], kept[0][1] + kept[1][1])
        del kept[0]
    merged: list[tuple[str | None, list[W]]] = []
    for owner, run in kept:
        if merged and owner == merged[-1][0]:
            merged[-1][1].extend(run)
        else:
            merged.append((owner, run))
    if times is None or len(merged) < 2:
        return merged
    return _cut_at_pauses(merged, times)


def _cut_at_pauses(
    runs: list[tuple[str | None, list[W]]], times: Callable[[W], tuple[int, int]]
) -> list[tuple[str | None, list[W]]]:
    flat = [w for _, run in runs for w in run]
    cuts, at = [], 0
    for _, run in runs[:-1]:
        at += len(run)
        cuts.append(at)
    bounds = [0, *cuts, len(flat)]

    def pause(i: int) -> int:
        return times(flat[i])[0] - times(flat[i - 1])[1]

    for k in range(1, len(bounds) - 1):
        lo, hi = max(bounds[k - 1] + 1, bounds[k] - 2), min(bounds[k + 1] - 1, bounds[k] + 2)
        bounds[k] = max(range(lo, hi + 1), key=lambda i: (pause(i), i == bounds[k]))
    return [(owner, flat[bounds[k] : bounds[k + 1]]) for k, (owner, _) in enumerate(runs)]


def majority_speaker(words: Sequence[Word]) -> str | None:
    """The label holding most of the words' time."""
    held: dict[str, int] = {}
    for w in words:
        if w.speaker:
            held[w.speaker] = held.get(w.speaker, 0) + max(1, w.end_ms - w.start_ms)
    return max(held, key=lambda k: held[k]) if held else None


@dataclass(frozen=True, slots=True)
class SessionStarted:
    session_id: str
    expires_at: int  # unix epoch seconds


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    channel: int
    at_ms: int


@dataclass(frozen=True, slots=True)
class TurnUpdate:
    """The whole turn so far: final words first, tentative after.

    `end_of_turn` marks the turn's last unformatted message; with `formatted` set it is the
    punctuated, cased re-send of an ended turn. `words` always holds every word of the turn,
    so dialects that re-send everything and dialects that send deltas both derive what they need.
    """

    channel: int
    turn_order: int
    words: tuple[Word, ...]
    end_of_turn: bool
    formatted: bool = False
    end_of_turn_confidence: float = 0.0
    language: str | None = None
    language_confidence: float | None = None
    speaker: str | None = None
    translation: str | None = None
    forced: bool = False  # the turn was ended by the client (ForceEndpoint), not by silence

    @property
    def final_text(self) -> str:
        return " ".join(w.text for w in self.words if w.final)

    @property
    def text(self) -> str:
        return " ".join(w.text for w in self.words)

    @property
    def start_ms(self) -> int:
        return self.words[0].start_ms if self.words else 0

    @property
    def end_ms(self) -> int:
        return self.words[-1].end_ms if self.words else 0


@dataclass(frozen=True, slots=True)
class AudioProgress:
    """The stream has received `audio_ms` of audio (only with `SessionConfig.progress_interval_ms`).

    Queued behind the events that audio produced, so a dialect can speak on the audio clock when
    the engine has nothing to say (silence), as AssemblyAI v2 does with empty partials.
    """

    audio_ms: int


@dataclass(frozen=True, slots=True)
class Flushed:
    """Every turn ended by `ForceEndpoint(marker=...)` has been emitted as final."""

    marker: str
    channel: int | None = None


class EndReason(StrEnum):
    TERMINATED = "terminated"  # client asked (Terminate) or audio ended cleanly
    CLIENT_GONE = "client_gone"  # the socket dropped without a Terminate
    INACTIVITY = "inactivity"  # no audio or keep-alive for inactivity_timeout
    EXPIRED = "expired"  # maximum session duration reached
    ERROR = "error"  # a protocol or server error ended it
    SHUTDOWN = "shutdown"  # the server is stopping


@dataclass(frozen=True, slots=True)
class SessionEnded:
    audio_ms: int
    session_ms: int
    reason: EndReason = EndReason.TERMINATED


class ErrorKind(StrEnum):
    AUTH = "auth"
    BAD_REQUEST = "bad_request"
    BAD_AUDIO = "bad_audio"
    RATE = "rate"
    LIMIT = "limit"  # too many at once (concurrent sessions): worth retrying soon
    # the key's daily audio allowance is spent: retrying before the reset (00:00 UTC) is futile,
    # so each dialect renders it as its own quota / billing error, never as its rate limit
    QUOTA = "quota"
    TIMEOUT = "timeout"
    BUSY = "busy"
    EXPIRED = "expired"
    INTERNAL = "internal"


@dataclass(frozen=True, slots=True)
class Error:
    """The engine's own failure (a model that stopped working): each dialect renders it as its
    internal error. A session-ending `ProtocolError` never travels as an event: the server hands
    it to `dialect.error(exc)`, which picks the close code."""

    kind: ErrorKind
    message: str


Event = SessionStarted | SpeechStarted | TurnUpdate | Flushed | AudioProgress | SessionEnded | Error
