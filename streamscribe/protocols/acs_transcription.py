"""ACS Call Automation transcription: job requests in, transcript frames and callbacks out.

Why this exists: a contact-center application written for Azure Communication Services gets
its live transcripts pushed to its own WebSocket server as `TranscriptionMetadata` then
`TranscriptionData` frames, and hears about start / stop / update / failure through CloudEvents
POSTed to its callback URL. This module is the pure half of that (sans-I/O): it validates the
REST bodies that mirror ACS's `TranscriptionOptions` and actions, renders engine `TurnUpdate`s as
ACS frames, and builds the callback events. Connecting out, retrying and the call's audio live in
`server/calls*.py`; inbound media frames in `acs_media.py`.

Rules the renderer keeps (see the protocol notes, "Pitfalls for a compatible pusher"):
camelCase keys with the irregular `participantRawID`; `offset`/`duration` as integer 100-ns
ticks on the call clock; `words` always present (lexical, lower-case); `format` "display";
intermediate results of a phrase repeat its `offset`, the phrase ends with exactly one `Final`;
only the kinds `TranscriptionMetadata` and `TranscriptionData` are ever sent.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from streamscribe.errors import PeerError, ProtocolError
from streamscribe.events import ErrorKind, TurnUpdate
from streamscribe.protocols.common import WHISPER_LANGUAGES, finite_number, quoted

TICKS_PER_MS = 10_000
MIXED_PARTICIPANT = "8:acs:streamscribe_mixed"  # mixed audio: no participant to name
EVENT_PREFIX = "Microsoft.Communication."
DEFAULT_RECONNECT_S = 30.0
MAX_RECONNECT_S = 600.0
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:~-]{0,127}")
_LOCALE = re.compile(r"([A-Za-z]{2,3})(?:[-_][A-Za-z0-9]{2,8})*")
_LANGUAGE_ALIASES = {"nb": "no", "iw": "he", "fil": "tl", "jv": "jw"}
_NON_WORD = re.compile(r"[^\w']+")

# transcriptionStatus / transcriptionStatusDetails values (ACS enums)
STARTED = "TranscriptionStarted"
STOPPED = "TranscriptionStopped"
UPDATED = "TranscriptionUpdated"
FAILED = "TranscriptionFailed"
STATUS = {
    STARTED: "transcriptionStarted",
    STOPPED: "transcriptionStopped",
    UPDATED: "transcriptionUpdated",
    FAILED: "transcriptionFailed",
}

_OPTION_KEYS = {
    "transportType",
    "transportUrl",
    "locale",
    "startTranscription",
    "enableIntermediateResults",
    "speechModelEndpointId",
}
_UNSUPPORTED_OPTIONS = {
    "locales": "several locales (language identification) is not supported: give one locale",
    "enableSentimentAnalysis": "sentiment analysis is not supported",
    "piiRedactionOptions": "PII redaction is not supported",
    "summarizationOptions": "summarization is not supported",
}
_JOB_KEYS = {
    "callConnectionId",
    "correlationId",
    "serverCallId",
    "callbackUri",
    "operationContext",
    "transcriptionOptions",
    "transcriptionConfiguration",
    "transportBearerToken",
    "transportReconnectSeconds",
}
_ACTION_KEYS = {
    "start": {"locale", "operationContext", "operationCallbackUri", "speechModelEndpointId"},
    "stop": {"operationContext", "operationCallbackUri"},
    "update": {"locale", "operationContext", "operationCallbackUri", "speechModelEndpointId"},
}


def _bad(reason: str) -> ProtocolError:
    return PeerError(ErrorKind.BAD_REQUEST, reason)


# ---------------------------------------------------------------------------- requests


@dataclass(frozen=True, slots=True)
class TranscriptionOptions:
    """ACS `WebSocketTranscriptionOptions`, checked."""

    transport_url: str
    locale: str
    language: str  # the Whisper language code of `locale`
    start_transcription: bool = False
    enable_intermediate_results: bool = False
    speech_model_endpoint_id: str | None = None


@dataclass(frozen=True, slots=True)
class JobRequest:
    """A call-transcription job: which call, where transcripts go, whom to tell."""

    call_connection_id: str
    correlation_id: str
    server_call_id: str
    options: TranscriptionOptions
    callback_uri: str | None = None
    operation_context: str | None = None
    transport_token: str | None = field(default=None, repr=False)
    reconnect_s: float = DEFAULT_RECONNECT_S

    def public(self) -> dict[str, Any]:
        """The job as JSON, secrets left out."""
        o = self.options
        options: dict[str, Any] = {
            "transportType": "websocket",
            "transportUrl": o.transport_url,
            "locale": o.locale,
            "startTranscription": o.start_transcription,
            "enableIntermediateResults": o.enable_intermediate_results,
        }
        if o.speech_model_endpoint_id:
            options["speechModelEndpointId"] = o.speech_model_endpoint_id
        return {
            "callConnectionId": self.call_connection_id,
            "correlationId": self.correlation_id,
            "serverCallId": self.server_call_id,
            "callbackUri": self.callback_uri,
            "operationContext": self.operation_context,
            "transcriptionOptions": options,
            "transportAuthorization": bool(self.transport_token),
            "transportReconnectSeconds": self.reconnect_s,
        }


@dataclass(frozen=True, slots=True)
class ActionRequest:
    """The body of startTranscription / stopTranscription / updateTranscription."""

    locale: str | None = None
    language: str | None = None
    operation_context: str | None = None
    operation_callback_uri: str | None = None
    speech_model_endpoint_id: str | None = None


def locale_language(locale: object) -> str:
    """The Whisper language of an ACS locale (`en-US` -> `en`); ProtocolError if unsupported."""
    if not isinstance(locale, str) or not locale.strip():
        raise _bad('locale must be a BCP-47 string such as "en-US"')
    match = _LOCALE.fullmatch(locale.strip())
    if match is None:
        raise _bad(f'locale {quoted(locale)} is not a locale such as "en-US" or "de-DE"')
    language = match.group(1).lower()
    language = _LANGUAGE_ALIASES.get(language, language)
    if language not in WHISPER_LANGUAGES:
        raise _bad(
            f"locale {quoted(locale)}: language {language!r} is not supported; supported "
            f"languages: {', '.join(sorted(WHISPER_LANGUAGES))}"
        )
    return language


def ws_url(value: object, name: str = "transportUrl") -> str:
    """A ws:// or wss:// URL with a host (what ACS would connect to)."""
    if not isinstance(value, str) or not value.strip():
        raise _bad(f"{name} is required: the ws:// or wss:// URL of your WebSocket server")
    url = value.strip()
    try:
        parts = urlsplit(url)
        _ = parts.port
    except ValueError:
        raise _bad(f"{name} {quoted(url)} is not a valid URL") from None
    if parts.scheme.lower() not in ("ws", "wss"):
        raise _bad(
            f"{name} {quoted(url)} is not a WebSocket URL: it must start with wss:// "
            "(or ws:// for local use)"
        )
    if not parts.hostname:
        raise _bad(f"{name} {quoted(url)} has no host")
    if len(url) > 2048:
        raise _bad(f"{name} is longer than 2048 characters")
    return url


def http_url(value: object, name: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _bad(f"{name} must be an http:// or https:// URL")
    url = value.strip()
    try:
        parts = urlsplit(url)
        _ = parts.port
    except ValueError:
        raise _bad(f"{name} {quoted(url)} is not a valid URL") from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise _bad(f"{name} {quoted(url)} must be an http:// or https:// URL with a host")
    if len(url) > 2048:
        raise _bad(f"{name} is longer than 2048 characters")
    return url


def _string(body: Mapping[str, Any], key: str, limit: int = 1024) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > limit:
        raise _bad(f"{key} must be a string of at most {limit} characters")
    return value


def _bool(body: Mapping[str, Any], key: str) -> bool:
    value = body.get(key, False)
    if not isinstance(value, bool):
        raise _bad(f"{key} must be true or false, not {quoted(str(value))}")
    return value


def _identifier(body: Mapping[str, Any], key: str, default: str) -> str:
    value = body.get(key)
    if value is None:
        return default
    if not isinstance(value, str) or not _ID.fullmatch(value):
        raise _bad(
            f"{key} must be 1-128 characters of letters, digits and . _ : ~ - "
            f"(it appears in URLs), not {quoted(str(value))}"
        )
    return value


def _object(body: object, what: str) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise _bad(f"{what} must be a JSON object")
    return body


def _known(body: Mapping[str, Any], allowed: set[str], what: str) -> None:
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise _bad(
            f"Unknown field{'s' if len(unknown) > 1 else ''} in {what}: "
            f"{', '.join(map(quoted, unknown))}; accepted: {', '.join(sorted(allowed))}"
        )


def parse_options(raw: object) -> TranscriptionOptions:
    body = _object(raw, "transcriptionOptions")
    for key, why in _UNSUPPORTED_OPTIONS.items():
        value = body.get(key)
        if value in (None, False, [], {}) or (isinstance(value, dict) and not value.get("enable")):
            continue
        raise _bad(f"transcriptionOptions.{key}: {why}")
    _known(
        {k: v for k, v in body.items() if k not in _UNSUPPORTED_OPTIONS},
        _OPTION_KEYS,
        "transcriptionOptions",
    )
    transport = body.get("transportType", "websocket")
    if not isinstance(transport, str) or transport.lower() != "websocket":
        raise _bad(f'transportType {quoted(str(transport))} is not supported: use "websocket"')
    if "locale" not in body:
        raise _bad('transcriptionOptions.locale is required (e.g. "en-US")')
    locale = body["locale"]
    return TranscriptionOptions(
        transport_url=ws_url(body.get("transportUrl")),
        locale=str(locale).strip(),
        language=locale_language(locale),
        start_transcription=_bool(body, "startTranscription"),
        enable_intermediate_results=_bool(body, "enableIntermediateResults"),
        speech_model_endpoint_id=_string(body, "speechModelEndpointId", 200),
    )


def parse_job_request(raw: object, new_id: str) -> JobRequest:
    """A `POST /v1/calls` body; ProtocolError(BAD_REQUEST) naming the field otherwise."""
    body = _object(raw, "The request body")
    _known(body, _JOB_KEYS, "the job")
    options_raw = body.get("transcriptionOptions", body.get("transcriptionConfiguration"))
    if options_raw is None:
        raise _bad(
            "transcriptionOptions is required: {transportUrl, locale, startTranscription, "
            "enableIntermediateResults}"
        )
    callback = body.get("callbackUri")
    reconnect = body.get("transportReconnectSeconds", DEFAULT_RECONNECT_S)
    if not finite_number(reconnect) or not 0 <= reconnect <= MAX_RECONNECT_S:
        raise _bad(f"transportReconnectSeconds must be a number from 0 to {MAX_RECONNECT_S:g}")
    call_id = _identifier(body, "callConnectionId", new_id)
    return JobRequest(
        call_connection_id=call_id,
        correlation_id=_identifier(body, "correlationId", new_id),
        server_call_id=_identifier(body, "serverCallId", new_id),
        options=parse_options(options_raw),
        callback_uri=http_url(callback, "callbackUri") if callback is not None else None,
        operation_context=_string(body, "operationContext"),
        transport_token=_string(body, "transportBearerToken", 8192),
        reconnect_s=float(reconnect),
    )


def parse_action(raw: object, action: str) -> ActionRequest:
    """The body of an action (`start`, `stop` or `update`); an empty body is `{}`."""
    body = _object({} if raw is None else raw, f"The {action}Transcription body")
    _known(body, _ACTION_KEYS[action], f"{action}Transcription")
    locale = body.get("locale")
    if action == "update" and locale is None:
        raise _bad('updateTranscription needs a locale (e.g. "de-DE")')
    callback = body.get("operationCallbackUri")
    return ActionRequest(
        locale=str(locale).strip() if locale is not None else None,
        language=locale_language(locale) if locale is not None else None,
        operation_context=_string(body, "operationContext"),
        operation_callback_uri=(
            http_url(callback, "operationCallbackUri") if callback is not None else None
        ),
        speech_model_endpoint_id=_string(body, "speechModelEndpointId", 200),
    )


# ---------------------------------------------------------------------------- frames out


def ticks(ms: float) -> int:
    """Milliseconds to integer 100-ns ticks."""
    return int(round(ms * TICKS_PER_MS))


def lexical(text: str) -> str:
    """The lexical form of a word: lower case, no punctuation (apostrophes kept)."""
    return _NON_WORD.sub("", text.lower()).strip("'")


def metadata_message(
    subscription_id: str,
    locale: str,
    call_connection_id: str,
    correlation_id: str,
    speech_model_endpoint_id: str | None = None,
) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "subscriptionId": subscription_id,
        "locale": locale,
        "callConnectionId": call_connection_id,
        "correlationId": correlation_id,
    }
    if speech_model_endpoint_id:
        # the protocol notes name it speechModelEndpointId; the JS SDK's parser reads the other
        meta["speechModelEndpointId"] = speech_model_endpoint_id
        meta["speechRecognitionModelEndpointId"] = speech_model_endpoint_id
    return {"kind": "TranscriptionMetadata", "transcriptionMetadata": meta}


@dataclass(frozen=True, slots=True)
class Rendered:
    message: dict[str, Any]
    final: bool


class TranscriptionRenderer:
    """Turns a call's `TurnUpdate`s (call-clock times, call-level turn numbers) into frames.

    A phrase is (participant, turn_order). Its `offset` is fixed when it first appears (the
    speech onset, or its first word if earlier), so every intermediate result and the final
    share it. With `display_resend`, the engine re-sends each
    ended turn formatted (punctuated, cased): that re-send is the `Final`, and the unformatted
    end of turn before it is skipped."""

    def __init__(self, intermediate: bool, display_resend: bool = True) -> None:
        self.intermediate = intermediate
        self.display_resend = display_resend
        self._offsets: dict[tuple[str, int], int] = {}
        self._last_text: dict[tuple[str, int], str] = {}
        self._onsets: dict[str, int] = {}

    def speech_started(self, participant: str, at_ms: int) -> None:
        """Speech began (the engine's SpeechStarted): the participant's next phrase starts here,
        unless its first word comes earlier."""
        self._onsets[participant] = at_ms

    def render(self, update: TurnUpdate, participant: str) -> Rendered | None:
        key = (participant, update.turn_order)
        words = [w for w in update.words if lexical(w.text)]
        if not words:
            return None
        if key not in self._offsets:
            onset = self._onsets.pop(participant, None)
            first = words[0].start_ms
            self._offsets[key] = first if onset is None else min(onset, first)
        offset_ms = self._offsets[key]
        if update.end_of_turn:
            if self.display_resend and not update.formatted:
                return None
            self._offsets.pop(key, None)
            self._last_text.pop(key, None)
            return Rendered(self._data(update, words, participant, offset_ms, "Final"), True)
        if not self.intermediate:
            return None
        text = " ".join(w.text for w in words)
        if self._last_text.get(key) == text:
            return None
        self._last_text[key] = text
        return Rendered(self._data(update, words, participant, offset_ms, "Intermediate"), False)

    @staticmethod
    def _data(update, words, participant: str, offset_ms: int, status: str) -> dict[str, Any]:
        end_ms = max(offset_ms, max(w.end_ms for w in words))
        confidence = sum(w.confidence for w in words) / len(words)
        return {
            "kind": "TranscriptionData",
            "transcriptionData": {
                "text": " ".join(w.text for w in words),
                "format": "display",
                "confidence": round(min(1.0, max(0.0, float(confidence))), 4),
                "offset": ticks(offset_ms),
                "duration": ticks(end_ms - offset_ms),
                "words": [
                    {
                        "text": lexical(w.text),
                        "offset": ticks(w.start_ms),
                        "duration": ticks(max(0, w.end_ms - w.start_ms)),
                    }
                    for w in words
                ],
                "participantRawID": participant,
                "resultStatus": status,
            },
        }


# ---------------------------------------------------------------------------- callbacks


def result_information(code: int, sub_code: int, message: str) -> dict[str, Any]:
    return {"code": int(code), "subCode": int(sub_code), "message": message}


def callback_event(
    kind: str,
    *,
    event_id: str,
    time: str,
    call_connection_id: str,
    server_call_id: str,
    correlation_id: str,
    status_details: str,
    result: dict[str, Any],
    operation_context: str | None = None,
    status: str | None = None,
) -> dict[str, Any]:
    """One CloudEvent for `kind` (TranscriptionStarted/Stopped/Updated/Failed); ACS POSTs a
    JSON array of these."""
    data: dict[str, Any] = {
        "transcriptionUpdate": {
            "transcriptionStatus": status or STATUS[kind],
            "transcriptionStatusDetails": status_details,
        },
        "callConnectionId": call_connection_id,
        "serverCallId": server_call_id,
        "correlationId": correlation_id,
        "resultInformation": result,
    }
    if operation_context is not None:
        data["operationContext"] = operation_context
    source = f"calling/callConnections/{call_connection_id}"
    return {
        "id": event_id,
        "source": source,
        "type": EVENT_PREFIX + kind,
        "subject": source,
        "time": time,
        "specversion": "1.0",
        "datacontenttype": "application/json",
        "data": data,
    }
