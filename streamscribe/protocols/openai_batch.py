"""OpenAI `POST /v1/audio/transcriptions` and `/v1/audio/translations`, sans-I/O.

Theory of operation: the route reads the multipart form and hands its text fields here as a
multi-dict (`parse_form`), which returns a checked `BatchRequest` or raises `OpenAIError` (HTTP
400, OpenAI's error envelope) naming the field and what is accepted. Once the engine has
transcribed the file into final turns (one per speech region), the `*_body` functions render the
response formats and `sse_*` the server-sent events of `stream=true`. Times go out in seconds.

Array fields arrive as `name[]` (the SDK) or `name` (other clients); both are read. What has no
meaning offline is accepted and answered sensibly (any model name; `chunking_strategy`, since files
are always cut at speech pauses; `include[]=logprobs`, answered per word). What is not built is
refused by name (`diarized_json`, known speakers), never silently ignored. A `temperature` above 0
is accepted and decoded deterministically (`APPROXIMATED`).
SubRip and WebVTT bodies come from `streamscribe.formats` in the route; this module must not import
it (protocols import only events and errors).

Reference: shared/protocols/openai-transcription.md §2.
"""

from __future__ import annotations

import json
import math
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from streamscribe.events import SessionConfig, TurnUpdate, Word
from streamscribe.protocols.common import loads_json, quoted
from streamscribe.protocols.openai_common import (
    OpenAIError,
    language_code,
    language_name,
    spoken_text,
    word_logprobs,
)

FORMATS = ("json", "text", "srt", "verbose_json", "vtt")
STREAM_FORMATS = ("json", "text")
GRANULARITIES = ("word", "segment")
MAX_MODEL_CHARS = 256
MAX_PROMPT_CHARS = 4000
MAX_KEYWORDS = 100
MAX_KEYWORD_CHARS = 50
SEGMENT_MAX_MS = 30000
SEGMENT_GAP_MS = 1500  # a pause this long between words starts a new segment
SENTENCE_END = (".", "?", "!", "。", "？", "！")

# What this dialect accepts but does not do exactly as the cloud does (listed by /v1/info)
APPROXIMATED = {
    "temperature": "any value 0-1 is accepted; decoding is always deterministic (beam search)",
    "model": "a served model's name picks it; others mean the default model",
}

_SCALARS = ("model", "language", "prompt", "response_format", "temperature", "stream")
_ARRAYS = ("timestamp_granularities", "include", "languages", "keywords")
_CHUNKING = "chunking_strategy"
_NOT_BUILT = {
    "known_speaker_names": "known speakers (diarization) are not supported by this server",
    "known_speaker_references": "known speakers (diarization) are not supported by this server",
}
_TRANSLATION_FIELDS = ("model", "prompt", "response_format", "temperature", "language", "stream")


@dataclass(frozen=True, slots=True)
class BatchRequest:
    """A checked transcription or translation request (the file travels separately)."""

    task: str = "transcribe"  # transcribe | translate
    model: str = "whisper-1"
    language: str | None = None  # Whisper code; None: detect (multilingual) or English
    prompt: str = ""
    response_format: str = "json"
    words: bool = False  # timestamp_granularities[] has word
    segments: bool = True  # timestamp_granularities[] has segment (the default)
    stream: bool = False
    logprobs: bool = False

    @property
    def media_type(self) -> str:
        if self.stream:
            return "text/event-stream"
        return {
            "json": "application/json",
            "verbose_json": "application/json",
            "text": "text/plain; charset=utf-8",
            "srt": "application/x-subrip; charset=utf-8",
            "vtt": "text/vtt; charset=utf-8",
        }[self.response_format]


def _bad(message: str, param: str | None, code: str = "invalid_value") -> OpenAIError:
    return OpenAIError(message, param=param, code=code)


def _field_name(name: str) -> str:
    return name[:-2] if name.endswith("[]") else name


def parse_form(fields: Mapping[str, Sequence[str]], *, translation: bool = False) -> BatchRequest:
    """Check the text fields of the multipart form (array fields with or without `[]`).

    Which model serves the request (a multilingual one for translation or another language)
    is the server's choice, made from `model_config`.
    """
    values: dict[str, list[str]] = {}
    for raw_name, items in fields.items():
        name = _field_name(raw_name)
        values.setdefault(name, []).extend(items)
    for name in values:
        if name in _NOT_BUILT:
            raise _bad(f"{name}[]: {_NOT_BUILT[name]}", name, "unsupported_parameter")
        known = (*_SCALARS, *_ARRAYS, _CHUNKING)
        if name not in known:
            raise _bad(
                f"Unrecognized request argument supplied: {quoted(name)}",
                name,
                "unknown_parameter",
            )
        if translation and name not in _TRANSLATION_FIELDS:
            raise _bad(
                f"{name} is not a parameter of /v1/audio/translations (it takes file, model, "
                "prompt, response_format, temperature; language names the source language)",
                name,
                "unsupported_parameter",
            )
    scalar: dict[str, str] = {}
    for name in (*_SCALARS, _CHUNKING):
        if name in values:
            if len(values[name]) > 1:
                raise _bad(f"{name} was given {len(values[name])} times: send it once", name)
            scalar[name] = values[name][0]

    model = scalar.get("model", "").strip()
    if not model:
        raise _bad(
            "you must provide a model parameter (any name works: whisper-1, "
            "gpt-4o-transcribe, ...; the server transcribes with its own model)",
            "model",
            "missing_required_parameter",
        )
    if len(model) > MAX_MODEL_CHARS:
        raise _bad(f"model is longer than {MAX_MODEL_CHARS} characters", "model")

    response_format = scalar.get("response_format", "json").strip() or "json"
    if response_format == "diarized_json":
        raise _bad(
            "response_format=diarized_json (speaker labels) is not supported by this server: "
            "use json, text, srt, vtt or verbose_json",
            "response_format",
            "unsupported_value",
        )
    if response_format not in FORMATS:
        raise _bad(
            f"Invalid response_format {quoted(response_format)}: expected one of "
            + ", ".join(FORMATS),
            "response_format",
        )

    # any temperature 0-1 is accepted: decoding is deterministic beam search whatever it says
    # (the closest thing to sampling a client can rely on; /v1/info lists it as approximated)
    _temperature(scalar.get("temperature"))

    stream = _boolean(scalar.get("stream"), "stream")
    if stream and response_format not in STREAM_FORMATS:
        raise _bad(
            f"stream=true sends transcript events; it works with response_format json or "
            f"text, not {response_format}",
            "stream",
        )

    granularities = tuple(g.strip() for g in values.get("timestamp_granularities", []))
    for g in granularities:
        if g not in GRANULARITIES:
            raise _bad(
                f"Invalid timestamp_granularities[] value {quoted(g)}: expected word or segment",
                "timestamp_granularities",
            )
    if granularities and response_format != "verbose_json":
        raise _bad(
            "timestamp_granularities[] needs response_format=verbose_json",
            "timestamp_granularities",
        )

    includes = tuple(i.strip() for i in values.get("include", []))
    for item in includes:
        if item != "logprobs":
            raise _bad(f"Invalid include[] value {quoted(item)}: expected logprobs", "include")
    if includes and response_format != "json":
        raise _bad("include[]=logprobs needs response_format=json", "include")

    language = _language(scalar.get("language"), values.get("languages", []))

    prompt = scalar.get("prompt", "")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise _bad(f"prompt is longer than {MAX_PROMPT_CHARS} characters", "prompt")
    keywords = [k.strip() for k in values.get("keywords", []) if k.strip()]
    if len(keywords) > MAX_KEYWORDS or any(len(k) > MAX_KEYWORD_CHARS for k in keywords):
        raise _bad(
            f"keywords[]: at most {MAX_KEYWORDS} items of at most {MAX_KEYWORD_CHARS} characters",
            "keywords",
        )
    if keywords:  # the model hears them first, as the streaming engine does with keyterms
        prompt = (", ".join(keywords) + ". " + prompt).strip()

    if _CHUNKING in scalar:
        _chunking(scalar[_CHUNKING])

    return BatchRequest(
        task="translate" if translation else "transcribe",
        model=model,
        language=language,
        prompt=prompt,
        response_format=response_format,
        words="word" in granularities,
        segments="segment" in granularities or not granularities,
        stream=stream,
        logprobs=bool(includes),
    )


def model_config(req: BatchRequest) -> SessionConfig:
    """The request in the terms the server's model choice reads: the model it names (a model
    the server serves is used; any other name means the default), its language, translation."""
    return SessionConfig(
        turn={"language": req.language, "translate": req.task == "translate"}, model=req.model
    )


def _temperature(raw: str | None) -> float:
    if raw is None or not raw.strip():
        return 0.0
    try:
        value = float(raw.strip())
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise _bad(f"Invalid temperature {quoted(raw)}: expected a number 0-1", "temperature")
    return value


def _boolean(raw: str | None, name: str) -> bool:
    if raw is None or not raw.strip():
        return False
    text = raw.strip().lower()
    if text in ("true", "1"):
        return True
    if text in ("false", "0"):
        return False
    raise _bad(f"Invalid {name} {quoted(raw)}: expected true or false", name)


def _language(raw: str | None, hints: list[str]) -> str | None:
    """The one source language asked for, as a Whisper code; None: detect it."""
    candidates = [("language", raw)] if raw is not None and raw.strip() else []
    candidates += [("languages", h) for h in hints if h.strip()]
    codes = []
    for param, value in candidates:
        code = language_code(value or "")
        if code is None:
            raise _bad(
                f"Invalid language {quoted(value or '')}: expected an ISO-639-1 code the "
                "model knows, e.g. en, de, fr, es, pt, ja, zh",
                param,
            )
        codes.append(code)
    if not codes:
        return None
    if raw is not None and raw.strip():
        return codes[0]  # language wins over the languages[] hints
    # several candidate languages: let the model detect which one it is
    return codes[0] if len(set(codes)) == 1 else None


def _chunking(raw: str) -> None:
    """`auto` or a server_vad object: accepted, as every file is cut at speech pauses anyway."""
    if raw.strip() == "auto":
        return
    try:
        value = loads_json(raw)
    except ValueError:
        value = None
    if not isinstance(value, dict) or value.get("type") != "server_vad":
        raise _bad(
            'Invalid chunking_strategy: expected "auto" or a JSON object '
            '{"type": "server_vad", ...}',
            "chunking_strategy",
        )
    for key in ("prefix_padding_ms", "silence_duration_ms", "threshold"):
        number = value.get(key)
        if number is not None and (
            isinstance(number, bool) or not isinstance(number, int | float) or number < 0
        ):
            raise _bad(f"Invalid chunking_strategy.{key}: expected a number >= 0", _CHUNKING)


# ---------------------------------------------------------------- responses


def _words(turns: Sequence[TurnUpdate]) -> list[Word]:
    return [w for t in turns for w in t.words if w.text.strip()]


def transcript_text(turns: Sequence[TurnUpdate]) -> str:
    """The whole transcript: every word of every turn, single-spaced."""
    return spoken_text(_words(turns))


def _seconds(ms: int) -> float:
    return round(max(0, ms) / 1000, 3)


def _detected_language(req: BatchRequest, turns: Sequence[TurnUpdate]) -> str | None:
    if req.language:
        return req.language
    return next((t.language for t in turns if t.language), None)


def json_body(req: BatchRequest, turns: Sequence[TurnUpdate], duration_s: float) -> dict:
    """`json`: the text, the billed duration, and per-word logprobs when asked for."""
    body: dict[str, Any] = {"text": transcript_text(turns)}
    if req.logprobs:
        body["logprobs"] = word_logprobs(_words(turns))
    if req.task == "transcribe":
        body["usage"] = {"type": "duration", "seconds": round(duration_s, 3)}
    return body


def verbose_body(req: BatchRequest, turns: Sequence[TurnUpdate], duration_s: float) -> dict:
    """`verbose_json`: task, language (its English name), duration, text, segments, words."""
    body: dict[str, Any] = {
        "task": req.task,
        "language": language_name(_detected_language(req, turns)),
        "duration": round(duration_s, 3),
        "text": transcript_text(turns),
    }
    if req.segments or req.task == "translate":
        body["segments"] = segments(turns)
    if req.words:
        body["words"] = [
            {"word": w.text.strip(), "start": _seconds(w.start_ms), "end": _seconds(w.end_ms)}
            for w in _words(turns)
        ]
    if req.task == "transcribe":
        body["usage"] = {"type": "duration", "seconds": round(duration_s, 3)}
    return body


def text_body(turns: Sequence[TurnUpdate]) -> str:
    """`text`: the transcript and a newline."""
    return transcript_text(turns) + "\n"


def segment_groups(turns: Sequence[TurnUpdate]) -> list[list[Word]]:
    """Each turn's words cut into segments: after a sentence end, at a long pause, or at 30 s."""
    groups: list[list[Word]] = []
    for turn in turns:
        current: list[Word] = []
        for word in (w for w in turn.words if w.text.strip()):
            if current and (
                word.start_ms - current[-1].end_ms >= SEGMENT_GAP_MS
                or word.end_ms - current[0].start_ms > SEGMENT_MAX_MS
            ):
                groups.append(current)
                current = []
            current.append(word)
            if word.text.strip().endswith(SENTENCE_END):
                groups.append(current)
                current = []
        if current:
            groups.append(current)
    return groups


def segments(turns: Sequence[TurnUpdate]) -> list[dict]:
    """Whisper-style segments. Token ids are not kept by the engine (an empty list), the
    average log probability comes from the word probabilities, and the compression ratio is
    computed from the text as Whisper does; no speech probability is 0 for words that were heard.
    """
    out = []
    for index, words in enumerate(segment_groups(turns)):
        text = spoken_text(words)
        logprobs = [math.log(max(float(w.confidence), 1e-6)) for w in words]
        data = text.encode("utf-8")
        out.append(
            {
                "id": index,
                "seek": max(0, words[0].start_ms) // 10,
                "start": _seconds(words[0].start_ms),
                "end": _seconds(max(words[-1].end_ms, words[0].start_ms)),
                "text": " " + text,
                "tokens": [],
                "temperature": 0.0,
                "avg_logprob": round(sum(logprobs) / len(logprobs), 4),
                "compression_ratio": round(len(data) / max(1, len(zlib.compress(data))), 4),
                "no_speech_prob": 0.0,
            }
        )
    return out


# ---------------------------------------------------------------- server-sent events


def sse(data: dict) -> bytes:
    """One server-sent event: `data: <json>` and a blank line."""
    return b"data: " + json.dumps(data, ensure_ascii=False).encode("utf-8") + b"\n\n"


class TranscriptStream:
    """The `stream=true` event sequence: a delta per speech region as it is decoded, then done.

    Deltas only ever add text: each is the next region's words (with a leading space after the
    first), so the deltas joined are exactly the `text` of `transcript.text.done`.
    """

    def __init__(self, req: BatchRequest) -> None:
        self.req = req
        self.text = ""
        self._words: list[Word] = []

    def delta(self, words: Sequence[Word]) -> bytes | None:
        """The delta event for the next region's words (None when they hold no text)."""
        spoken = [w for w in words if w.text.strip()]
        if not spoken:
            return None
        piece = (" " if self.text else "") + spoken_text(spoken)
        event: dict[str, Any] = {"type": "transcript.text.delta", "delta": piece}
        if self.req.logprobs:
            event["logprobs"] = word_logprobs(spoken, lead=bool(self.text))
        self.text += piece
        self._words.extend(spoken)
        return sse(event)

    def done(self) -> bytes:
        event: dict[str, Any] = {"type": "transcript.text.done", "text": self.text}
        if self.req.logprobs:
            event["logprobs"] = word_logprobs(self._words)
        return sse(event)

    @staticmethod
    def error(exc: OpenAIError) -> bytes:
        """A failure mid-stream: the SDK raises APIError with this message."""
        return sse({"type": "error", "error": exc.body()})
