"""What an Azure Speech SDK connection asks for: its path, query, credentials, speech.context.

The SDK picks the WebSocket path by recognizer (`PATHS`) and puts some options in the query
(`language`, `format=detailed`, `wordLevelTimestamps`, `lidEnabled`, `from`/`to`), the rest in
the first request's `speech.context` (conversation mode and speaker diarization, output format,
language identification candidates, translation targets). `read_context` folds both into one
`Context`, and `session_config` turns that into the protocol-neutral `SessionConfig`. Options we
cannot honour (custom models, pronunciation assessment, keyword recognition, intent, translation
into other languages than English) are refused here with the reason, never ignored. The
connection's state machine is `azure_usp.py`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

from streamscribe.events import SessionConfig
from streamscribe.protocols.azure_usp_frames import bad
from streamscribe.protocols.common import WHISPER_LANGUAGES, quoted


class Recognizer(Enum):
    CONVERSATION = "ConversationTranscriber"
    SPEECH = "SpeechRecognizer"
    TRANSLATION = "TranslationRecognizer"


# path -> (recognizer, single shot): what `SpeechConfig(host=...)` reaches for each recognizer
PATHS: dict[str, tuple[Recognizer | None, bool]] = {
    "/speech/universal/v2": (None, False),  # conversation transcription; speech on some SDKs
    "/stt/speech/universal/v2": (None, False),  # translation (and speech) via host=
    "/speech/recognition/interactive/cognitiveservices/v1": (Recognizer.SPEECH, True),
    "/speech/recognition/conversation/cognitiveservices/v1": (Recognizer.SPEECH, False),
    "/speech/recognition/dictation/cognitiveservices/v1": (Recognizer.SPEECH, False),
    "/speech/translation/cognitiveservices/v1": (Recognizer.TRANSLATION, False),
}

# what a client may ask for in speech.context that we cannot do: refused, never ignored
UNSUPPORTED_CONTEXT = {
    "pronunciationAssessment": "pronunciation assessment",
    "keywordDetection": "keyword recognition",
    "synthesis": "speech synthesis of translations",
    "intent": "intent recognition",
}
MAX_PHRASES = 100  # the engine's key-term limits
MAX_PHRASE_CHARS = 50

UNSUPPORTED_QUERY = {
    "cid": "custom speech models (endpoint_id)",
    "endpointId": "custom speech models (endpoint_id)",
    "voice": "speech synthesis of translations (voice_name)",
}


# ------------------------------------------------------------------ the handshake


@dataclass(frozen=True)
class Handshake:
    """What the upgrade request says: the path's recognizer and the query's options."""

    path: str
    recognizer: Recognizer | None  # None: the universal path, speech.context decides
    single_shot: bool
    language: str | None = None
    targets: tuple[str, ...] = ()
    detailed: bool = False
    word_timings: bool = False
    languages: tuple[str, ...] = ()  # candidates for language detection


def parse_handshake(path: str, query: Mapping[str, str]) -> Handshake:
    """The recognizer and options of an upgrade; unknown paths and options are refused."""
    path = path.rstrip("/") or "/"
    if path not in PATHS:
        raise bad(f"Unknown USP path {quoted(path)}: expected one of " + ", ".join(PATHS))
    for name, what in UNSUPPORTED_QUERY.items():
        if query.get(name):
            raise bad(f"Not supported by this server: {what}")
    recognizer, single_shot = PATHS[path]
    word_timings = query.get("wordLevelTimestamps", "").lower() == "true"
    return Handshake(
        path=path,
        recognizer=recognizer,
        single_shot=single_shot,
        language=query.get("language") or query.get("from") or None,
        targets=tuple(t for t in (query.get("to") or "").split(",") if t),
        detailed=query.get("format", "").lower() == "detailed" or word_timings,
        word_timings=word_timings,
        languages=tuple(x for x in (query.get("lidEnabled") or "").split(",") if x),
    )


def credentials(headers: Mapping[str, str], query: Mapping[str, str]) -> dict[str, str]:
    """The credential as streamscribe reads it (`authorization`): a subscription key from
    `Ocp-Apim-Subscription-Key` (header or query, as the SDK sends keys), or the SDK's
    `Authorization: Bearer <token>` (`SpeechConfig(auth_token=...)`) as it is."""
    key = headers.get("ocp-apim-subscription-key") or query.get("Ocp-Apim-Subscription-Key")
    if key:
        return {"authorization": key}
    token = headers.get("authorization")
    return {"authorization": token} if token else {}


@dataclass(frozen=True)
class Context:
    """The first request's speech.context, folded into the handshake's options."""

    recognizer: Recognizer
    single_shot: bool
    language: str | None
    languages: tuple[str, ...]
    targets: tuple[str, ...]
    diarization: bool
    detailed: bool
    word_timings: bool
    phrases: tuple[str, ...] = ()  # PhraseListGrammar: our key terms


def read_context(body: dict[str, Any], handshake: Handshake) -> Context:
    detection = _object(body, "phraseDetection")
    enrichment = _object(detection, "enrichment")
    for key, what in UNSUPPORTED_CONTEXT.items():
        if any(part.get(key) is not None for part in (body, detection, enrichment)):
            raise bad(f"Not supported by this server: {what}")
    mode = str(detection.get("mode") or "").upper()
    diarization = _object(detection, "speakerDiarization")
    output = _object(body, "phraseOutput")
    options = _strings(_object(output, "detailed"), "options")
    if "PronunciationAssessment" in options:
        raise bad(f"Not supported by this server: {UNSUPPORTED_CONTEXT['pronunciationAssessment']}")
    translation = _object(body, "translation")
    targets = _strings(translation, "targetLanguages")
    targets = targets or handshake.targets
    languages = _strings(_object(body, "languageId"), "languages")
    if handshake.recognizer is not None:
        recognizer = handshake.recognizer
    elif targets:
        recognizer = Recognizer.TRANSLATION
    elif diarization or mode == "CONVERSATION":
        recognizer = Recognizer.CONVERSATION
    else:
        recognizer = Recognizer.SPEECH
    language = detection.get("language") if isinstance(detection.get("language"), str) else None
    return Context(
        recognizer=recognizer,
        single_shot=handshake.single_shot or mode == "INTERACTIVE",
        language=language or handshake.language,
        languages=languages or handshake.languages,
        targets=targets,
        diarization=bool(diarization) and diarization.get("mode") not in (None, "None"),
        detailed=handshake.detailed or str(output.get("format", "")).lower() == "detailed",
        word_timings=handshake.word_timings or "WordTimings" in options,
        phrases=phrase_list(body),
    )


def phrase_list(body: dict[str, Any]) -> tuple[str, ...]:
    """`PhraseListGrammar` phrases (speech.context `dgi` groups), as the engine's key terms."""
    groups = _object(body, "dgi").get("Groups")
    phrases: list[str] = []
    for group in groups if isinstance(groups, list) else ():
        items = group.get("Items") if isinstance(group, dict) else None
        for item in items if isinstance(items, list) else ():
            text = item.get("Text") if isinstance(item, dict) else None
            if isinstance(text, str) and text.strip():
                phrases.append(text.strip())
    if len(phrases) > MAX_PHRASES or any(len(p) > MAX_PHRASE_CHARS for p in phrases):
        raise bad(
            f"Phrase list too long: at most {MAX_PHRASES} phrases of {MAX_PHRASE_CHARS} "
            "characters each"
        )
    return tuple(phrases)


def _object(body: Any, key: str) -> dict[str, Any]:
    value = body.get(key) if isinstance(body, dict) else None
    return value if isinstance(value, dict) else {}


def _strings(body: dict[str, Any], key: str) -> tuple[str, ...]:
    """The strings of a JSON list field; anything else (a bool, a number, one string) is none."""
    value = body.get(key)
    return tuple(x for x in value if isinstance(x, str)) if isinstance(value, list) else ()


def whisper_language(locale: str) -> str:
    """en-US -> en; a language the model does not know is refused here, at the edge."""
    code = locale.split("-")[0].lower()
    if code not in WHISPER_LANGUAGES:
        raise bad(f"Unsupported language {quoted(locale)}: expected a locale such as en-US, de-DE")
    return code


def session_config(context: Context) -> SessionConfig:
    """The protocol-neutral settings of the session a context asks for."""
    turn: dict[str, Any] = {"format_turns": True}  # DisplayText is punctuated, cased text
    candidates = {whisper_language(x) for x in context.languages}
    detect = len(candidates) > 1
    if len(candidates) == 1:
        turn["language"] = candidates.pop()
    elif not detect and context.language:
        turn["language"] = whisper_language(context.language)
    if context.phrases:
        turn["keyterms"] = context.phrases
    if context.recognizer is Recognizer.TRANSLATION:
        wrong = [t for t in context.targets if whisper_language(t) != "en"]
        if wrong or not context.targets:
            raise bad(
                "Translation is into English only (Whisper translates to English): "
                f"add_target_language('en'), not {', '.join(wrong) or 'no target'}"
            )
        turn["translate"] = True
    return SessionConfig(
        turn=turn,
        language_detection=detect,
        speaker_labels=context.diarization,
    )
