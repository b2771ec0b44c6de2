"""OpenAI Realtime transcription session settings: parse both update layouts, render both objects.

A Realtime client configures its transcription session with `session.update` (GA layout:
`session.audio.input.{format, transcription, turn_detection, noise_reduction}`) or
`transcription_session.update` (beta layout: `input_audio_format`, `input_audio_transcription`,
`turn_detection`, `input_audio_noise_reduction`). Both parse into one `RealtimeSettings`, checked
whole before anything changes (an update with one bad field changes nothing), and render back as
the session object of either layout. `engine_turn` maps the settings onto the engine's turn
settings: server VAD and semantic VAD become silence rules, `turn_detection: null` (manual commit)
turns silence endpointing off. The protocol state machine lives in `openai_realtime.py`.

Reference: shared/protocols/openai-transcription.md §3.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from streamscribe.events import AudioFormat
from streamscribe.protocols.common import finite_number, quoted
from streamscribe.protocols.openai_common import OpenAIError, language_code

SAMPLE_RATE = 24000
G711_RATE = 8000
# the input formats (GA type names), their beta names, and the audio each one holds
FORMATS = {
    "audio/pcm": ("pcm16", AudioFormat("pcm_s16le", SAMPLE_RATE, 1)),
    "audio/pcmu": ("g711_ulaw", AudioFormat("pcm_mulaw", G711_RATE, 1)),
    "audio/pcma": ("g711_alaw", AudioFormat("pcm_alaw", G711_RATE, 1)),
}
BETA_FORMATS = {beta: ga for ga, (beta, _) in FORMATS.items()}
LOGPROBS = "item.input_audio_transcription.logprobs"
MAX_MODEL_CHARS = 256
MAX_PROMPT_CHARS = 4000
MAX_KEYWORDS = 100
MAX_KEYWORD_CHARS = 50
DELAYS = ("minimal", "low", "medium", "high", "xhigh")
EAGERNESS = ("low", "medium", "high", "auto")

# When the engine ends a turn after the last word (ms): after a sentence end / in any case.
# server_vad's silence_duration_ms is the first; the second is never shorter than the engine's
# own default, so a pause inside a sentence does not cut it in two.
UNSURE_SILENCE_MS = 1280
SEMANTIC_SILENCE_MS = {"high": (250, 1000), "medium": (500, 2000), "auto": (500, 2000)}
SEMANTIC_SILENCE_MS["low"] = (800, 4000)
MANUAL_SILENCE_MS = 3_600_000  # turn_detection null: only a commit (or 45 s of speech) ends a turn

DEFAULT_VAD: dict[str, Any] = {
    "type": "server_vad",
    "threshold": 0.5,
    "prefix_padding_ms": 300,
    "silence_duration_ms": 500,
}


@dataclass(frozen=True)
class RealtimeSettings:
    """What a transcription session is configured to do."""

    model: str = "whisper-1"
    language: str | None = None
    prompt: str = ""
    keywords: tuple[str, ...] = ()
    delay: str | None = None
    turn_detection: dict[str, Any] | None = field(default_factory=lambda: dict(DEFAULT_VAD))
    logprobs: bool = False
    input_format: str = "audio/pcm"  # a key of FORMATS

    @property
    def audio(self) -> AudioFormat:
        """What the client's appended audio holds."""
        return FORMATS[self.input_format][1]

    @property
    def manual(self) -> bool:
        """Turns end only when the client commits (turn_detection null)."""
        return self.turn_detection is None


def engine_turn(settings: RealtimeSettings) -> dict[str, Any]:
    """The engine's turn settings for these session settings (every key, every time)."""
    vad = settings.turn_detection
    turn: dict[str, Any] = {
        "language": settings.language,
        "prompt": settings.prompt,
        "keyterms": settings.keywords,
    }
    if vad is None:
        turn |= {
            "min_turn_silence_ms": MANUAL_SILENCE_MS,
            "max_turn_silence_ms": MANUAL_SILENCE_MS,
            "vad_threshold": DEFAULT_VAD["threshold"],
            "pre_roll_ms": DEFAULT_VAD["prefix_padding_ms"],
        }
    elif vad["type"] == "semantic_vad":
        sure, unsure = SEMANTIC_SILENCE_MS[vad.get("eagerness") or "auto"]
        turn |= {
            "min_turn_silence_ms": sure,
            "max_turn_silence_ms": unsure,
            "vad_threshold": DEFAULT_VAD["threshold"],
            "pre_roll_ms": DEFAULT_VAD["prefix_padding_ms"],
        }
    else:
        silence = int(vad["silence_duration_ms"])
        turn |= {
            "min_turn_silence_ms": silence,
            "max_turn_silence_ms": max(silence, UNSURE_SILENCE_MS),
            "vad_threshold": float(vad["threshold"]),
            "pre_roll_ms": int(vad["prefix_padding_ms"]),
        }
    return turn


# ---------------------------------------------------------------- session objects


def ga_session(settings: RealtimeSettings, session_id: str, expires_at: int) -> dict[str, Any]:
    """The GA transcription session object (`session.created` / `session.updated`)."""
    return {
        "type": "transcription",
        "object": "realtime.transcription_session",
        "id": session_id,
        "expires_at": expires_at,
        "audio": {
            "input": {
                "format": _ga_format(settings),
                "transcription": _transcription(settings),
                "turn_detection": _vad_object(settings),
                "noise_reduction": None,
            }
        },
        "include": [LOGPROBS] if settings.logprobs else [],
    }


def beta_session(settings: RealtimeSettings, session_id: str, expires_at: int) -> dict[str, Any]:
    """The beta transcription session object (`transcription_session.created` / `.updated`)."""
    return {
        "object": "realtime.transcription_session",
        "id": session_id,
        "expires_at": expires_at,
        "input_audio_format": FORMATS[settings.input_format][0],
        "input_audio_transcription": _transcription(settings),
        "turn_detection": _vad_object(settings),
        "input_audio_noise_reduction": None,
        "include": [LOGPROBS] if settings.logprobs else [],
        "client_secret": None,
    }


def _ga_format(settings: RealtimeSettings) -> dict[str, Any]:
    if settings.input_format == "audio/pcm":
        return {"type": "audio/pcm", "rate": SAMPLE_RATE}
    return {"type": settings.input_format}


def _transcription(settings: RealtimeSettings) -> dict[str, Any]:
    data: dict[str, Any] = {
        "model": settings.model,
        "language": settings.language,
        "prompt": settings.prompt,
    }
    if settings.keywords:
        data["keywords"] = list(settings.keywords)
    if settings.delay:
        data["delay"] = settings.delay
    return data


def _vad_object(settings: RealtimeSettings) -> dict[str, Any] | None:
    return None if settings.turn_detection is None else dict(settings.turn_detection)


# ---------------------------------------------------------------- parsing updates


def _bad(message: str, param: str, code: str = "invalid_value") -> OpenAIError:
    return OpenAIError(message, param=param, code=code)


def _unsupported(message: str, param: str) -> OpenAIError:
    return OpenAIError(message, param=param, code="unsupported_feature")


def _object(value: Any, param: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _bad(f"{param} must be an object", param)
    return value


def _unknown(data: dict[str, Any], known: tuple[str, ...], param: str) -> None:
    for key in data:
        if key not in known:
            raise _bad(
                f"Unknown parameter: {param}.{shown_key(key)} (accepted: {', '.join(known)})",
                f"{param}.{shown_key(key)}",
                "unknown_parameter",
            )


def shown_key(key: str) -> str:
    return key if len(key) <= 40 and key.isprintable() else quoted(key)


def is_ga_layout(session: dict[str, Any]) -> bool:
    """GA objects carry `type` or `audio`; beta objects are flat (`input_audio_*`)."""
    return "type" in session or "audio" in session


def parse_session(
    session: Any,
    current: RealtimeSettings,
    *,
    multilingual: bool = True,
    model_name: str = "the server's model",
) -> RealtimeSettings:
    """The settings after applying an update's `session` object (either layout).

    Fields left out keep their value; `turn_detection: null` means manual commit. Raises
    `OpenAIError` naming the offending parameter; nothing is applied then.
    """
    data = _object(session, "session")
    changes: dict[str, Any] = {}
    if is_ga_layout(data):
        _unknown(data, ("type", "audio", "include", "object", "id", "expires_at"), "session")
        kind = data.get("type", "transcription")
        if kind != "transcription":
            raise _unsupported(
                f"session.type={quoted(str(kind))}: this server runs transcription sessions only "
                "(connect with ?intent=transcription and send session.type=transcription)",
                "session.type",
            )
        audio = _object(data.get("audio", {}), "session.audio")
        _unknown(audio, ("input",), "session.audio")
        source = _object(audio.get("input", {}), "session.audio.input")
        _unknown(
            source,
            ("format", "transcription", "turn_detection", "noise_reduction"),
            "session.audio.input",
        )
        prefix = "session.audio.input"
        fields = {
            "format": source.get("format"),
            "transcription": source.get("transcription"),
            "turn_detection": source.get("turn_detection"),
            "noise_reduction": source.get("noise_reduction"),
        }
        present = {k for k in fields if k in source}
        names = {k: f"{prefix}.{k}" for k in fields}
    else:
        beta_keys = (
            "input_audio_format",
            "input_audio_transcription",
            "turn_detection",
            "input_audio_noise_reduction",
            "include",
            "modalities",
            "object",
            "id",
            "expires_at",
            "client_secret",
        )
        _unknown(data, beta_keys, "session")
        mapping = {
            "format": "input_audio_format",
            "transcription": "input_audio_transcription",
            "turn_detection": "turn_detection",
            "noise_reduction": "input_audio_noise_reduction",
        }
        fields = {k: data.get(v) for k, v in mapping.items()}
        present = {k for k, v in mapping.items() if v in data}
        names = {k: f"session.{v}" for k, v in mapping.items()}
        modalities = data.get("modalities")
        if modalities is not None and modalities != ["text"]:
            raise _unsupported(
                'session.modalities: a transcription session produces text only (["text"])',
                "session.modalities",
            )

    if "format" in present:
        changes["input_format"] = _check_format(fields["format"], names["format"])
    if "noise_reduction" in present and fields["noise_reduction"] is not None:
        # accepted and not applied (Whisper copes with noisy input): the session object the
        # server sends back says so with noise_reduction null
        _noise_reduction(fields["noise_reduction"], names["noise_reduction"])
    if "transcription" in present:
        changes |= _parse_transcription(
            fields["transcription"], names["transcription"], multilingual, model_name
        )
    if "turn_detection" in present:
        changes["turn_detection"] = _parse_vad(fields["turn_detection"], names["turn_detection"])
    if "include" in data:
        changes["logprobs"] = _parse_include(data["include"])
    return dataclasses.replace(current, **changes)


def _check_format(value: Any, param: str) -> str:
    """The input format an update names (a key of FORMATS): GA objects or beta strings."""
    if isinstance(value, str) and value in BETA_FORMATS:
        return BETA_FORMATS[value]
    if isinstance(value, dict):
        kind = value.get("type")
        if kind == "audio/pcm":
            _unknown(value, ("type", "rate"), param)
            rate = value.get("rate", SAMPLE_RATE)
            if rate != SAMPLE_RATE or isinstance(rate, bool):
                raise _bad(f"{param}.rate must be 24000 (audio/pcm is 24 kHz)", f"{param}.rate")
            return kind
        if kind in FORMATS:  # G.711 is 8 kHz by definition: a rate, if given, says so
            _unknown(value, ("type", "rate"), param)
            rate = value.get("rate", G711_RATE)
            if rate != G711_RATE or isinstance(rate, bool):
                raise _bad(f"{param}.rate must be 8000 ({kind} is 8 kHz)", f"{param}.rate")
            return kind
        shown = quoted(str(kind)) if kind is not None else "no type"
    else:
        shown = quoted(str(value)) if isinstance(value, str) else "a non-string value"
    raise _bad(
        f"{param}: {shown} is not an audio format; expected "
        '{"type": "audio/pcm", "rate": 24000}, {"type": "audio/pcmu"} or {"type": "audio/pcma"} '
        '(GA), or "pcm16", "g711_ulaw" or "g711_alaw" (beta)',
        param,
    )


def _noise_reduction(value: Any, param: str) -> None:
    data = _object(value, param)
    _unknown(data, ("type",), param)
    if data.get("type") not in ("near_field", "far_field"):
        raise _bad(f"{param}.type must be near_field or far_field", f"{param}.type")


def _string(value: Any, param: str, limit: int) -> str:
    if not isinstance(value, str):
        raise _bad(f"{param} must be a string", param)
    if len(value) > limit:
        raise _bad(f"{param} is longer than {limit} characters", param)
    return value


def _strings(value: Any, param: str, max_items: int, max_chars: int) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _bad(f"{param} must be a list of strings", param)
    items = tuple(v.strip() for v in value if v.strip())
    if len(items) > max_items or any(len(v) > max_chars for v in items):
        raise _bad(f"{param}: at most {max_items} items of at most {max_chars} characters", param)
    return items


def _parse_transcription(
    value: Any, param: str, multilingual: bool, model_name: str
) -> dict[str, Any]:
    if value is None:
        raise _unsupported(
            f"{param} cannot be null in a transcription session (transcribing is all it does)",
            param,
        )
    data = _object(value, param)
    _unknown(data, ("model", "language", "prompt", "keywords", "languages", "delay"), param)
    out: dict[str, Any] = {
        "model": "whisper-1",
        "language": None,
        "prompt": "",
        "keywords": (),
        "delay": None,
    }
    if data.get("model") is not None:
        out["model"] = _string(data["model"], f"{param}.model", MAX_MODEL_CHARS).strip()
    if data.get("prompt") is not None:
        out["prompt"] = _string(data["prompt"], f"{param}.prompt", MAX_PROMPT_CHARS)
    if data.get("keywords") is not None:
        out["keywords"] = _strings(
            data["keywords"], f"{param}.keywords", MAX_KEYWORDS, MAX_KEYWORD_CHARS
        )
    if data.get("delay") is not None:
        if data["delay"] not in DELAYS:
            raise _bad(f"{param}.delay must be one of {', '.join(DELAYS)}", f"{param}.delay")
        out["delay"] = data["delay"]
    codes: list[str] = []
    candidates = []
    if data.get("language") is not None:
        candidates.append((f"{param}.language", data["language"]))
    if data.get("languages") is not None:
        hints = _strings(data["languages"], f"{param}.languages", 100, 20)
        candidates += [(f"{param}.languages", h) for h in hints]
    for name, raw in candidates:
        code = language_code(raw) if isinstance(raw, str) else None
        if code is None:
            raise _bad(
                f"{name}: {quoted(str(raw))} is not a language the model knows; expected an "
                "ISO-639-1 code such as en, de, fr, es",
                name,
            )
        if code != "en" and not multilingual:
            raise _bad(
                f"{name}={code} needs a multilingual model, and this session runs the "
                f"English-only {model_name}: connect with ?model=base (extra_query={{'intent': "
                "'transcription', 'model': 'base'}) or start the server with --model base",
                name,
                "model_not_multilingual",
            )
        codes.append(code)
    if codes:
        # language wins; several languages[] hints: the model detects which one it is
        first = data.get("language") is not None
        out["language"] = codes[0] if first or len(set(codes)) == 1 else None
    return out


def _int(data: dict[str, Any], key: str, param: str, lo: int, hi: int, default: int) -> int:
    value = data.get(key)
    if value is None:
        return default
    if (
        not finite_number(value)
        or (isinstance(value, float) and not value.is_integer())
        or not lo <= value <= hi  # compared as given: a 400-digit int never becomes a float
    ):
        raise _bad(f"{param}.{key} must be an integer between {lo} and {hi}", f"{param}.{key}")
    return int(value)


def _parse_vad(value: Any, param: str) -> dict[str, Any] | None:
    if value is None:
        return None
    data = _object(value, param)
    kind = data.get("type")
    for flag in ("create_response", "interrupt_response"):
        # responses are never created in a transcription session: true or false, nothing changes
        if flag in data and not isinstance(data[flag], bool):
            raise _bad(f"{param}.{flag} must be true or false", f"{param}.{flag}")
    if kind == "server_vad":
        _unknown(
            data,
            (
                "type",
                "threshold",
                "prefix_padding_ms",
                "silence_duration_ms",
                "idle_timeout_ms",
                "create_response",
                "interrupt_response",
            ),
            param,
        )
        if data.get("idle_timeout_ms") is not None:
            raise _unsupported(
                f"{param}.idle_timeout_ms (input_audio_buffer.timeout_triggered) is not "
                "supported by this server; leave it out or null",
                f"{param}.idle_timeout_ms",
            )
        threshold = data.get("threshold", DEFAULT_VAD["threshold"])
        if threshold is None:
            threshold = DEFAULT_VAD["threshold"]
        if not finite_number(threshold) or not 0.0 <= threshold <= 1.0:
            raise _bad(f"{param}.threshold must be a number 0-1", f"{param}.threshold")
        return {
            "type": "server_vad",
            "threshold": float(threshold),
            "prefix_padding_ms": _int(
                data, "prefix_padding_ms", param, 0, 2000, DEFAULT_VAD["prefix_padding_ms"]
            ),
            "silence_duration_ms": _int(
                data, "silence_duration_ms", param, 0, 10000, DEFAULT_VAD["silence_duration_ms"]
            ),
        }
    if kind == "semantic_vad":
        _unknown(data, ("type", "eagerness", "create_response", "interrupt_response"), param)
        eagerness = data.get("eagerness") or "auto"
        if eagerness not in EAGERNESS:
            raise _bad(
                f"{param}.eagerness must be one of {', '.join(EAGERNESS)}", f"{param}.eagerness"
            )
        return {"type": "semantic_vad", "eagerness": eagerness}
    shown = quoted(kind) if isinstance(kind, str) else "missing"
    raise _bad(
        f"{param}.type {shown}: expected server_vad or semantic_vad (or turn_detection null "
        "for manual commit)",
        f"{param}.type",
    )


def _parse_include(value: Any) -> bool:
    if value is None:
        return False
    items = _strings(value, "session.include", 10, 100)
    for item in items:
        if item != LOGPROBS:
            raise _bad(
                f"session.include: {quoted(item)} is not known; expected {LOGPROBS}",
                "session.include",
            )
    return bool(items)
