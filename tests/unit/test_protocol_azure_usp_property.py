"""Property tests for the USP dialect's parsers: whatever a client sends (text frames, binary
frames, WAV headers, speech.context bodies, query strings), the answer is a checked result or a
`PeerError` carrying close 1007 and a reason that fits a close frame; never any other exception
(which the session loop would turn into an internal error and a log trace)."""

from __future__ import annotations

import json
import struct

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from streamscribe.errors import PeerError
from streamscribe.protocols.azure_usp import UspProtocol
from streamscribe.protocols.azure_usp_frames import encode_binary, encode_text, parse_wave_header
from streamscribe.protocols.azure_usp_handshake import parse_handshake, read_context, session_config
from streamscribe.protocols.common import close_code_of, close_reason

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=20), inner, max_size=3)
    ),
    max_leaves=12,
)
keys = st.sampled_from(
    [
        "phraseDetection",
        "phraseOutput",
        "languageId",
        "translation",
        "dgi",
        "speakerDiarization",
        "mode",
        "language",
        "languages",
        "targetLanguages",
        "Groups",
        "Items",
        "Text",
        "enrichment",
        "detailed",
        "options",
    ]
)
contexts = st.recursive(
    json_values, lambda inner: st.dictionaries(keys, inner, max_size=4), max_leaves=20
)


def refused_well(exc: PeerError) -> None:
    assert close_code_of(exc) == 1007
    assert exc.reason and close_reason(exc.reason)


def streaming() -> UspProtocol:
    dialect = UspProtocol(parse_handshake("/speech/universal/v2", {"language": "en-US"}))
    dialect.receive_text(encode_text("speech.context", "r1", {}))
    return dialect


@SETTINGS
@given(st.text(max_size=300))
@example("Path:speech.context\r\nX-RequestId:r\r\n\r\n" + "[" * 100_000)
@example('Path:speech.context\r\nX-RequestId:r\r\n\r\n{"a": 1e999999}')
@example('Path:speech.context\r\nX-RequestId:r\r\n\r\n{"a": NaN}')
@example('Path:speech.context\r\nX-RequestId:r\r\n\r\n"\\ud800"')
@example("no colon here\r\n\r\n{}")
def test_any_text_frame(text):
    dialect = UspProtocol(parse_handshake("/speech/universal/v2", {}))
    try:
        assert dialect.receive_text(text) == []
    except PeerError as exc:
        refused_well(exc)


@SETTINGS
@given(st.binary(max_size=300))
@example(b"\x00\x02\xff\xfe")
@example(struct.pack(">H", 40) + b"Path:audio\r\nX-RequestId:r1\r\n" + b"RIFF")
def test_any_binary_frame(data):
    dialect = streaming()
    try:
        dialect.receive_bytes(data)
    except PeerError as exc:
        refused_well(exc)


@SETTINGS
@given(st.binary(max_size=120))
@example(b"RIFF\0\0\0\0WAVE" + b"fmt " + struct.pack("<I", 2**32 - 1))
@example(b"RIFF\0\0\0\0WAVE" + b"data" + struct.pack("<I", 0))
def test_any_wave_header_in_the_first_audio_frame(payload):
    try:
        parse_wave_header(payload)
    except PeerError as exc:
        refused_well(exc)
    dialect = streaming()
    try:
        dialect.receive_bytes(encode_binary("audio", "r1", payload))
    except PeerError as exc:
        refused_well(exc)


@SETTINGS
@given(
    contexts,
    st.dictionaries(
        st.sampled_from(["language", "from", "to", "lidEnabled", "format", "cid"]),
        st.text(max_size=12),
        max_size=3,
    ),
)
# found by CI: a list field holding a bool (or a string, read as its letters) crashed the parser
@example({"translation": {"phraseDetection": None, "targetLanguages": True}}, {})
@example({"translation": {"targetLanguages": "de"}, "languageId": {"languages": 7}}, {})
@example({"phraseOutput": {"detailed": {"options": 3}}}, {})
def test_any_context_and_query(body, query):
    try:
        handshake = parse_handshake("/speech/universal/v2", query)
        context = read_context(body if isinstance(body, dict) else {}, handshake)
        session_config(context)
    except PeerError as exc:
        refused_well(exc)
    dialect = UspProtocol(parse_handshake("/stt/speech/universal/v2", {}))
    try:
        dialect.receive_text(encode_text("speech.context", "r1", None) + json.dumps(body))
        dialect.session_config()
    except PeerError as exc:
        refused_well(exc)


def test_a_list_field_that_is_not_a_list_means_none():
    handshake = parse_handshake("/speech/universal/v2", {})
    context = read_context(
        {"translation": {"targetLanguages": "de"}, "languageId": {"languages": True}}, handshake
    )
    assert context.targets == ()  # not ("d", "e")
    assert context.languages == ()
