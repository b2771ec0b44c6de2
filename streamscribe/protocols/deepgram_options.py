"""Deepgram `/v1/listen` options and the pieces of its JSON that live and pre-recorded share.

Why this exists: the WebSocket and the HTTP API take the same query string and describe words
the same way (`word`, `punctuated_word`, float seconds, confidences), so both dialect modules
(`deepgram` live, `deepgram_prerecorded`) read options and render words here, once.

Every parameter a client may send is either used, accepted because it has no meaning offline
(model names, `tag`, `mip_opt_out`, `version`), or refused naming the parameter (`NOT_BUILT`):
never silently ignored. Unknown parameters are ignored, as the cloud does (SDKs add new ones).
Refusals are `ProtocolError`s with an error kind; the routes answer them with the HTTP status
and body of `http_error` (Deepgram's `err_code` / `err_msg` / `request_id`).

Reference: shared/protocols/deepgram-listen.md §1.1, §2.2, §5.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from streamscribe.errors import PeerError, ProtocolError
from streamscribe.events import AudioFormat, ErrorKind, SessionConfig, Word
from streamscribe.protocols.common import WHISPER_LANGUAGES, QueryReader, list_problem, quoted

# Deepgram encoding names -> ours (raw, headerless audio)
ENCODINGS = {"linear16": "pcm_s16le", "mulaw": "pcm_mulaw", "alaw": "pcm_alaw"}
# encodings the cloud takes that a live stream here does not; in a file, the container ones are
# read by PyAV whatever the parameter says
OTHER_ENCODINGS = ("linear32", "flac", "amr-nb", "amr-wb", "opus", "ogg-opus", "speex", "g729")
CONTAINER_ENCODINGS = ("flac", "amr-nb", "amr-wb", "opus", "ogg-opus", "speex")
MAX_CHANNELS = 8
MAX_KEYTERMS = 100
MAX_KEYTERM_CHARS = 100

UTTERANCE_CLOCK_MS = 100  # how finely UtteranceEnd follows the audio
NO_AUDIO_TIMEOUT_S = 10.0  # Deepgram's rule: no audio and no message for 10 s closes (NET-0001)


# endpointing=N maps onto the engine's two silence rules: a turn whose hypothesis ends a
# sentence ends after max(N, ENDPOINTING_FLOOR_MS) of silence, any other after
# max(N, ENGINE_MAX_SILENCE_MS). Below the floor a pause inside a sentence would cut it in two.
ENDPOINTING_FLOOR_MS = 200
ENGINE_MAX_SILENCE_MS = 1280

# Features the cloud has and this server does not: asking for one is an error naming it.
NOT_BUILT = {
    "redact": "redaction",
    "search": "search",
    "replace": "find-and-replace",
    "detect_entities": "entity detection",
    "profanity_filter": "the profanity filter",
    "dictation": "dictation commands",
    "language_hint": "language hints (use language=...)",
    "callback": "callbacks (results come back on this request)",
}


# What this dialect accepts but does not do exactly as the cloud does (listed by /v1/info;
# filler_words also as a `warnings` entry in Metadata)
APPROXIMATED = {
    "filler_words": "the model's prompt shows it fillers, so most 'um' and 'uh' are written",
    "keywords": "the decoder's prompt (boosts are not applied)",
    "endpointing": "a turn ends after max(N, 200) ms of silence at a sentence end",
    "smart_format": "punctuation and casing, as punctuate",
    "model, version, tier, numerals, mip_opt_out, no_delay": "accepted, no meaning offline",
}


# HTTP statuses and error codes of a refused request (before the upgrade, and the REST API)
HTTP_STATUS = {
    ErrorKind.AUTH: 401,
    ErrorKind.BAD_REQUEST: 400,
    ErrorKind.BAD_AUDIO: 400,
    ErrorKind.LIMIT: 429,
    ErrorKind.QUOTA: 402,  # Deepgram: 402 ASR_PAYMENT_REQUIRED, out of credits
    ErrorKind.RATE: 429,
    ErrorKind.BUSY: 503,
    ErrorKind.EXPIRED: 401,
    ErrorKind.TIMEOUT: 408,
    ErrorKind.INTERNAL: 500,
}
_ERR_CODES = {
    401: "INVALID_AUTH",
    402: "ASR_PAYMENT_REQUIRED",  # developers.deepgram.com/docs/errors: insufficient credits
    400: "Bad Request",
    408: "REQUEST_TIMEOUT",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    429: "TOO_MANY_REQUESTS",
    503: "SERVICE_UNAVAILABLE",
}

_NON_WORD = re.compile(r"[^\w']+")
_BOOST = re.compile(r":[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)$")


def plain_word(text: str) -> str:
    """A word as Deepgram's `word` field holds it: lower case, no punctuation."""
    return _NON_WORD.sub("", text.lower()).strip("'")


def http_error(kind: ErrorKind, reason: str, request_id: str | None = None) -> tuple[int, dict]:
    """The HTTP status and Deepgram-shaped body (`err_code`, `err_msg`, `request_id`)."""
    status = HTTP_STATUS.get(kind, 500)
    return status, error_body(status, reason, request_id)


def error_body(status: int, reason: str, request_id: str | None = None) -> dict:
    return {
        "err_code": _ERR_CODES.get(status, "INTERNAL_SERVER_ERROR"),
        "err_msg": reason,
        "request_id": request_id or str(uuid.uuid4()),
    }


# ---------------------------------------------------------------- options (query string)

Params = Mapping[str, str] | Iterable[tuple[str, str]]


@dataclass(frozen=True)
class DeepgramOptions:
    """What a `/v1/listen` request asked for, checked; shared by live and pre-recorded."""

    model: str = "nova-3"
    language: str | None = "en"  # None: detect (language=multi)
    encoding: str | None = None  # ours (pcm_s16le ...); None: a container (WAV live, any file)
    sample_rate: int | None = None
    channels: int = 1
    multichannel: bool = False
    interim_results: bool = False
    punctuate: bool = False
    smart_format: bool = False
    endpointing_ms: int | None = None  # None: the engine's own silence rules
    endpointing: bool = True  # false: speech_final is never set
    utterance_end_ms: int | None = None
    vad_events: bool = False
    diarize: bool = False  # words carry an integer `speaker`
    filler_words: bool = False  # keep "um", "uh" (the model's prompt shows them)
    keyterms: tuple[str, ...] = ()
    extra: dict[str, str] = field(default_factory=dict)
    tags: tuple[str, ...] = ()
    # pre-recorded only
    utterances: bool = False
    utt_split_s: float = 0.8
    paragraphs: bool = False

    @property
    def formatted(self) -> bool:
        return self.punctuate or self.smart_format

    @property
    def detect_language(self) -> bool:
        return self.language is None


def _collect(params: Params) -> tuple[dict[str, str], dict[str, list[str]]]:
    items = params.items() if isinstance(params, Mapping) else params
    last: dict[str, str] = {}
    lists: dict[str, list[str]] = {}
    for key, value in items:
        last[key] = value
        lists.setdefault(key, []).append(value)
    return last, lists


def _bad(reason: str) -> ProtocolError:
    return PeerError(ErrorKind.BAD_REQUEST, reason)


def _refuse_not_built(last: Mapping[str, str], names: Mapping[str, str]) -> None:
    for name, what in names.items():
        value = last.get(name, "").strip()
        if value and value.lower() != "false":
            raise _bad(
                f"{name}={quoted(value)} is not supported: this server does not do {what}; "
                f"remove {name} from the request"
            )


def _terms(values: list[str], name: str, strip_boost: bool) -> tuple[str, ...]:
    out: list[str] = []
    for raw in values:
        term = raw.strip()
        if strip_boost:
            term = _BOOST.sub("", term).strip()  # keywords=word:2 -> word (boosts are not used)
        if term:
            out.append(term)
    problem = list_problem(tuple(out), MAX_KEYTERMS, MAX_KEYTERM_CHARS)
    if problem:
        raise _bad(f"Invalid {name}: {problem}")
    return tuple(out)


def parse_options(
    params: Params, *, live: bool = True, not_built: Mapping[str, str] | None = None
) -> DeepgramOptions:
    """Validate a `/v1/listen` query; unknown parameters are ignored (SDKs add new ones)."""
    last, lists = _collect(params)
    _refuse_not_built(last, NOT_BUILT if not_built is None else not_built)
    q = QueryReader(last)
    raw_encoding = last.get("encoding", "").strip().lower()
    encoding: str | None = None
    if raw_encoding:
        encoding = ENCODINGS.get(raw_encoding)
        if encoding is None and (live or raw_encoding not in CONTAINER_ENCODINGS):
            accepted = "linear16, mulaw or alaw" + (
                " (or no encoding and a WAV stream)" if live else " (or no encoding: any file)"
            )
            known = raw_encoding in OTHER_ENCODINGS
            raise _bad(
                f"encoding={quoted(last['encoding'])} is "
                f"{'not supported here' if known else 'unknown'}: use {accepted}"
            )
    sample_rate = q.int("sample_rate", None, 8000, 48000)
    if encoding is not None and sample_rate is None:
        raise _bad(
            f"Missing sample_rate: encoding={raw_encoding} needs the rate of the audio, "
            "e.g. sample_rate=16000 (8000-48000)"
        )
    channels = q.int("channels", 1, 1, MAX_CHANNELS)
    multichannel = q.bool("multichannel")
    if live and encoding is not None and channels > 1 and not multichannel:
        raise _bad(
            f"channels={channels} without multichannel=true: mixing channels down is not "
            "supported on live streams; add multichannel=true (each channel transcribed on "
            "its own) or send mono audio"
        )
    endpointing_ms: int | None = None
    endpointing = True
    raw_endpointing = last.get("endpointing", "").strip().lower()
    if raw_endpointing == "false":
        endpointing = False
    elif raw_endpointing and raw_endpointing != "true":
        endpointing_ms = q.int("endpointing", None, 0, 60000)
    language: str | None = "en"
    raw_language = last.get("language", "").strip()
    if raw_language:
        if raw_language.lower() in ("multi", "auto"):
            language = None
        else:
            language = raw_language.split("-")[0].split("_")[0].lower()
            if language not in WHISPER_LANGUAGES:
                raise _bad(
                    f"Invalid language={quoted(raw_language)}: expected a language the model "
                    "knows, e.g. en, en-US, es, fr, de (or multi to detect it)"
                )
    keyterms = _terms(lists.get("keyterm", []), "keyterm", False) + _terms(
        lists.get("keywords", []), "keywords", True
    )
    if len(keyterms) > MAX_KEYTERMS:
        raise _bad(f"Too many keyterm and keywords: {len(keyterms)}, at most {MAX_KEYTERMS}")
    extra: dict[str, str] = {}
    for item in lists.get("extra", []):
        key, sep, value = item.partition(":")
        if not sep or not key.strip():
            raise _bad(f"Invalid extra={quoted(item)}: expected key:value")
        extra[key.strip()] = value.strip()
    utt_split = q.float("utt_split", 0.8, 0.01, 60.0)
    return DeepgramOptions(
        model=last.get("model", "").strip() or "nova-3",
        language=language,
        encoding=encoding,
        sample_rate=sample_rate,
        channels=channels,
        multichannel=multichannel,
        interim_results=q.bool("interim_results"),
        punctuate=q.bool("punctuate"),
        smart_format=q.bool("smart_format"),
        endpointing_ms=endpointing_ms,
        endpointing=endpointing,
        utterance_end_ms=q.int("utterance_end_ms", None, 1, 60000),
        vad_events=q.bool("vad_events"),
        diarize=q.bool("diarize"),
        filler_words=q.bool("filler_words"),
        keyterms=keyterms,
        extra=extra,
        tags=tuple(t.strip() for t in lists.get("tag", []) if t.strip()),
        utterances=q.bool("utterances"),
        utt_split_s=float(utt_split if utt_split is not None else 0.8),
        paragraphs=q.bool("paragraphs"),
    )


def warnings(options: DeepgramOptions) -> list[dict[str, str]]:
    """What the request asked for that is done approximately here, in the shape of the cloud's
    `metadata.warnings` (`parameter`, `type`, `message`); empty when everything is exact."""
    out: list[dict[str, str]] = []
    if options.filler_words:
        out.append(
            {
                "parameter": "filler_words",
                "type": "approximated",
                "message": "filler words come from the model's prompt, which shows it fillers: "
                "most 'um' and 'uh' are written, not all",
            }
        )
    return out


def turn_settings(options: DeepgramOptions) -> dict[str, Any]:
    """The engine turn settings (`SessionConfig.turn`) the options ask for."""
    turn: dict[str, Any] = {"format_turns": options.formatted}
    if options.keyterms:
        turn["keyterms"] = options.keyterms
    if options.filler_words:
        turn["filler_words"] = True
    if options.language is not None:
        turn["language"] = options.language
    if options.endpointing_ms is not None:
        n = options.endpointing_ms
        turn["min_turn_silence_ms"] = max(n, ENDPOINTING_FLOOR_MS)
        turn["max_turn_silence_ms"] = max(n, ENGINE_MAX_SILENCE_MS)
    return turn


def session_config(options: DeepgramOptions, audio: AudioFormat | None = None) -> SessionConfig:
    """The session the options describe; `audio` overrides the format (a sniffed WAV header)."""
    if audio is None:
        audio = AudioFormat(
            encoding=options.encoding or "pcm_s16le",
            sample_rate=options.sample_rate or 16000,
            channels=options.channels,
        )
    return SessionConfig(
        audio=audio,
        turn=turn_settings(options),
        inactivity_timeout_s=NO_AUDIO_TIMEOUT_S,
        language_detection=options.detect_language,
        speaker_labels=options.diarize,
        model=options.model,
        # UtteranceEnd is timed on the audio clock: the engine says how much it has heard
        progress_interval_ms=UTTERANCE_CLOCK_MS if options.utterance_end_ms is not None else None,
    )


def model_info(model: str) -> tuple[str, dict[str, str]]:
    """A stable uuid and Deepgram's `model_info` for a requested model name."""
    model_uuid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"streamscribe:{model}"))
    return model_uuid, {"name": model, "version": "streamscribe", "arch": "whisper"}


def created_stamp(moment: datetime) -> str:
    """ISO 8601 with milliseconds and a Z, as the cloud writes `created`."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def seconds(ms: int | float) -> float:
    return round(ms / 1000, 3)


def word_json(word: Word, punctuated: bool, language: str | None = None) -> dict[str, Any] | None:
    """One Deepgram word, or None for a token with no letters or digits (bare punctuation)."""
    plain = plain_word(word.text)
    if not plain:
        return None
    out: dict[str, Any] = {
        "word": plain,
        "start": seconds(word.start_ms),
        "end": seconds(word.end_ms),
        "confidence": round(float(word.confidence), 4),
    }
    if punctuated:
        out["punctuated_word"] = word.text.strip()
    if word.speaker is not None:
        out["speaker"] = speaker_index(word.speaker)
    if language is not None:
        out["language"] = language
    return out


def speaker_index(label: str) -> int:
    """The engine's speaker labels ("A", "B", ... "Z", "AA") as Deepgram's integers from 0."""
    if label.isascii() and label.isalpha() and label.isupper() and len(label) <= 2:
        if len(label) == 1:
            return ord(label) - ord("A")
        return (ord(label[0]) - ord("A") + 1) * 26 + ord(label[1]) - ord("A")
    return 0


def alternative(
    words: Iterable[Word], punctuated: bool, language: str | None = None
) -> dict[str, Any]:
    """Deepgram's `alternatives[0]`: transcript, confidence (mean over words), words."""
    items = [w for w in (word_json(x, punctuated, language) for x in words) if w is not None]
    key = "punctuated_word" if punctuated else "word"
    confidence = sum(w["confidence"] for w in items) / len(items) if items else 0.0
    out: dict[str, Any] = {
        "transcript": " ".join(w[key] for w in items),
        "confidence": round(confidence, 4),
        "words": items,
    }
    if language is not None:
        out["languages"] = [language] if items else []
    return out


def handshake_credentials(
    headers: Mapping[str, str], subprotocols: Sequence[str]
) -> tuple[dict[str, str], str | None]:
    """The headers to authenticate with, and the subprotocol to select: browsers cannot set
    Authorization and offer `Sec-WebSocket-Protocol: token, KEY` (or `bearer, JWT`) instead,
    and drop the connection unless the server selects `token` (`bearer`)."""
    found = {k.lower(): v for k, v in headers.items()}
    offered = [p.strip() for p in subprotocols if p.strip()]
    if len(offered) >= 2 and offered[0].lower() in ("token", "bearer"):
        if "authorization" not in found:
            found["authorization"] = f"{offered[0]} {offered[1]}"
        return found, offered[0]
    return found, None
