"""What the OpenAI batch and Realtime dialects share: the error envelope, language names, logprobs.

OpenAI reports every failure as `{"error": {"message", "type", "param", "code"}}` (over HTTP with
the status code, over the Realtime socket inside an `error` event); `OpenAIError` carries those
fields plus the HTTP status, so a parser can raise one and the route (or the Realtime dialect)
renders it unchanged. Whisper's API names languages in English ("german"), not by code, and
log probabilities are given per word here (the engine keeps word probabilities, not tokens).
Pure values and functions only (sans-I/O).

Reference: shared/protocols/openai-transcription.md.
"""

from __future__ import annotations

import math
from typing import Any

from streamscribe.errors import ProtocolError
from streamscribe.events import ErrorKind, Word

INVALID_REQUEST = "invalid_request_error"
SERVER_ERROR = "server_error"
# OpenAI's billing error: HTTP 429 with error.type and error.code "insufficient_quota" ("You
# exceeded your current quota, please check your plan and billing details"); its docs say a retry
# will not help. The SDK retries 429s unless told not to (`x-should-retry: false`, or a
# Retry-After over two minutes), which `RETRY_HEADERS` does.
INSUFFICIENT_QUOTA = "insufficient_quota"
RETRY_HEADERS = {"x-should-retry": "false"}

_KIND_STATUS = {
    ErrorKind.AUTH: 401,
    ErrorKind.BAD_REQUEST: 400,
    ErrorKind.BAD_AUDIO: 400,
    ErrorKind.RATE: 429,
    ErrorKind.LIMIT: 429,
    ErrorKind.QUOTA: 429,  # OpenAI's status for insufficient_quota too: the code tells them apart
    ErrorKind.TIMEOUT: 408,
    ErrorKind.EXPIRED: 400,
    ErrorKind.BUSY: 503,
    ErrorKind.INTERNAL: 500,
}
_KIND_CODE = {
    ErrorKind.AUTH: "invalid_api_key",
    ErrorKind.BAD_REQUEST: "invalid_request",
    ErrorKind.BAD_AUDIO: "invalid_audio",
    ErrorKind.RATE: "rate_limit_exceeded",
    ErrorKind.LIMIT: "rate_limit_exceeded",
    ErrorKind.QUOTA: INSUFFICIENT_QUOTA,
    ErrorKind.TIMEOUT: "session_idle_timeout",
    ErrorKind.EXPIRED: "session_expired",
    ErrorKind.BUSY: "server_busy",
    ErrorKind.INTERNAL: "server_error",
}


class OpenAIError(ProtocolError):
    """A request OpenAI's API would refuse, with the fields of its error envelope.

    `status` is the HTTP status (400 bad parameter, 401 key, 413 too large, 429 limits,
    500/503 server); over the Realtime socket the same fields go into an `error` event.
    """

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = "invalid_value",
        status: int = 400,
        kind: ErrorKind = ErrorKind.BAD_REQUEST,
    ) -> None:
        super().__init__(kind, message)
        self.message = message
        self.param = param
        self.error_code = code
        self.status = status
        if kind is ErrorKind.QUOTA:
            self.error_type = INSUFFICIENT_QUOTA
        else:
            self.error_type = SERVER_ERROR if status >= 500 else INVALID_REQUEST

    @property
    def headers(self) -> dict[str, str]:
        """HTTP headers for the error response: a spent quota tells the SDK not to retry."""
        return dict(RETRY_HEADERS) if self.kind is ErrorKind.QUOTA else {}

    def body(self) -> dict[str, Any]:
        """The `error` object, as OpenAI sends it."""
        return {
            "message": self.message,
            "type": self.error_type,
            "param": self.param,
            "code": self.error_code,
        }

    @classmethod
    def from_protocol(cls, exc: ProtocolError) -> OpenAIError:
        """Any protocol-neutral error (auth, limits, busy) in OpenAI's terms."""
        if isinstance(exc, OpenAIError):
            return exc
        return cls(
            exc.reason,
            code=_KIND_CODE.get(exc.kind, "server_error"),
            status=_KIND_STATUS.get(exc.kind, 500),
            kind=exc.kind,
        )


def error_body(exc: ProtocolError) -> dict[str, Any]:
    """`{"error": {...}}` for any ProtocolError (the HTTP error response body)."""
    return {"error": OpenAIError.from_protocol(exc).body()}


# Whisper's language codes and the English names its API reports (openai-whisper tokenizer.py).
LANGUAGE_NAMES: dict[str, str] = {
    "en": "english", "zh": "chinese", "de": "german", "es": "spanish", "ru": "russian",
    "ko": "korean", "fr": "french", "ja": "japanese", "pt": "portuguese", "tr": "turkish",
    "pl": "polish", "ca": "catalan", "nl": "dutch", "ar": "arabic", "sv": "swedish",
    "it": "italian", "id": "indonesian", "hi": "hindi", "fi": "finnish", "vi": "vietnamese",
    "he": "hebrew", "uk": "ukrainian", "el": "greek", "ms": "malay", "cs": "czech",
    "ro": "romanian", "da": "danish", "hu": "hungarian", "ta": "tamil", "no": "norwegian",
    "th": "thai", "ur": "urdu", "hr": "croatian", "bg": "bulgarian", "lt": "lithuanian",
    "la": "latin", "mi": "maori", "ml": "malayalam", "cy": "welsh", "sk": "slovak",
    "te": "telugu", "fa": "persian", "lv": "latvian", "bn": "bengali", "sr": "serbian",
    "az": "azerbaijani", "sl": "slovenian", "kn": "kannada", "et": "estonian",
    "mk": "macedonian", "br": "breton", "eu": "basque", "is": "icelandic", "hy": "armenian",
    "ne": "nepali", "mn": "mongolian", "bs": "bosnian", "kk": "kazakh", "sq": "albanian",
    "sw": "swahili", "gl": "galician", "mr": "marathi", "pa": "punjabi", "si": "sinhala",
    "km": "khmer", "sn": "shona", "yo": "yoruba", "so": "somali", "af": "afrikaans",
    "oc": "occitan", "ka": "georgian", "be": "belarusian", "tg": "tajik", "sd": "sindhi",
    "gu": "gujarati", "am": "amharic", "yi": "yiddish", "lo": "lao", "uz": "uzbek",
    "fo": "faroese", "ht": "haitian creole", "ps": "pashto", "tk": "turkmen", "nn": "nynorsk",
    "mt": "maltese", "sa": "sanskrit", "lb": "luxembourgish", "my": "myanmar", "bo": "tibetan",
    "tl": "tagalog", "mg": "malagasy", "as": "assamese", "tt": "tatar", "haw": "hawaiian",
    "ln": "lingala", "ha": "hausa", "ba": "bashkir", "jw": "javanese", "su": "sundanese",
    "yue": "cantonese",
}  # fmt: skip
_CODES_BY_NAME = {name: code for code, name in LANGUAGE_NAMES.items()}


def language_name(code: str | None) -> str:
    """The English name Whisper's API reports for a language code ("de" -> "german")."""
    if not code:
        return "english"
    return LANGUAGE_NAMES.get(code.lower(), code.lower())


def language_code(value: str) -> str | None:
    """A client's language as a Whisper code: "de", "de-DE", "German" -> "de"; None: unknown."""
    text = value.strip().lower()
    if text in LANGUAGE_NAMES:
        return text
    base = text.replace("_", "-").split("-")[0]
    if base in LANGUAGE_NAMES:
        return base
    return _CODES_BY_NAME.get(text)


def word_logprobs(words: tuple[Word, ...] | list[Word], lead: bool = False) -> list[dict]:
    """OpenAI `logprobs` entries, one per word: token (with its leading space), logprob, bytes.

    The engine keeps each word's probability, not each token's; a word is the finest unit we can
    answer for honestly. `lead` puts a space before the first word too (a delta that continues
    earlier text).
    """
    out = []
    for i, word in enumerate(words):
        token = (" " if i or lead else "") + word.text.strip()
        out.append(
            {
                "token": token,
                "logprob": round(math.log(max(float(word.confidence), 1e-6)), 4),
                "bytes": list(token.encode("utf-8")),
            }
        )
    return out


def spoken_text(words: tuple[Word, ...] | list[Word]) -> str:
    """Words joined by single spaces (each word's own spacing dropped)."""
    return " ".join(w.text.strip() for w in words if w.text.strip())
