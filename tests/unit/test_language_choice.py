"""Language handling without a model: which model a session gets, and when a detected
language may replace the session's language."""

from __future__ import annotations

import numpy as np
import pytest

from streamscribe.config import Settings
from streamscribe.engine.decoding import DecodeRequest
from streamscribe.engine.whisper_rules import stick_to_hint
from streamscribe.errors import ProtocolError
from streamscribe.events import SessionConfig
from streamscribe.server.model_choice import choose_model, needs_multilingual

AUDIO = np.zeros(1600, dtype=np.float32)


def req(hint: str | None, switch: float = 0.7) -> DecodeRequest:
    return DecodeRequest(AUDIO, language_hint=hint, switch_confidence=switch)


def ranking(*pairs: tuple[str, float]) -> list[tuple[str, float]]:
    return [(f"<|{lang}|>", p) for lang, p in pairs]


def test_a_confident_detection_switches_language():
    assert stick_to_hint(ranking(("fr", 0.92), ("en", 0.05)), req("en")) == ("fr", 0.92)


def test_an_unclear_detection_keeps_the_session_language():
    lang, p = stick_to_hint(ranking(("nn", 0.41), ("de", 0.38), ("en", 0.1)), req("de"))
    assert (lang, p) == ("de", 0.38)


def test_without_a_session_language_the_detection_stands():
    assert stick_to_hint(ranking(("es", 0.3), ("pt", 0.29)), req(None)) == ("es", 0.3)


def test_a_hint_missing_from_the_ranking_still_wins_an_unclear_detection():
    assert stick_to_hint(ranking(("ja", 0.5)), req("zh")) == ("zh", 0.0)


# ------------------------------------------------------------------ model choice

SETTINGS = Settings(model="tiny.en", multilingual_model="base", models=["small"])


def config(**kw) -> SessionConfig:
    turn = kw.pop("turn", {})
    return SessionConfig(turn=turn, **kw)


@pytest.mark.parametrize(
    "cfg",
    [
        config(turn={"language": "de"}),
        config(language_detection=True),
        config(turn={"translate": True}),
        config(model="universal-streaming-multilingual"),
    ],
)
def test_sessions_that_need_languages_get_the_multilingual_model(cfg):
    assert needs_multilingual(cfg)
    assert choose_model(SETTINGS, cfg, default_multilingual=False) == "base"


def test_english_sessions_stay_on_the_default_model():
    for cfg in (config(), config(turn={"language": "en"}), config(model="nova-3")):
        assert not needs_multilingual(cfg)
        assert choose_model(SETTINGS, cfg, default_multilingual=False) == "tiny.en"


def test_a_multilingual_default_serves_every_language_itself():
    s = Settings(model="base")
    assert choose_model(s, config(turn={"language": "fr"}), default_multilingual=True) == "base"


def test_a_served_model_can_be_named_and_a_vendor_name_means_the_default():
    assert choose_model(SETTINGS, config(model="small"), default_multilingual=False) == "small"
    assert choose_model(SETTINGS, config(model="whisper-1"), default_multilingual=False) == (
        "tiny.en"
    )


def test_no_multilingual_model_configured_is_an_error_naming_the_fix():
    s = Settings(model="tiny.en", multilingual_model="")
    with pytest.raises(ProtocolError) as info:
        choose_model(s, config(turn={"language": "de"}), default_multilingual=False)
    assert "'de'" in info.value.reason and "--model base" in info.value.reason
