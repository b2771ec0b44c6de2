"""Property tests for the Deepgram parsers: whatever a client sends, a checked result or a
`ProtocolError` whose reason fits the HTTP body and a close frame — never another exception.

Parsers under test: `parse_options` (live and pre-recorded), `DeepgramProtocol.receive_text`,
`receive_bytes` (with and without `encoding=`, where the first frame settles the format) and
`wav_format`. The named examples are the classic bombs (deep nesting, huge
numbers, NaN, lone surrogates, non-object JSON, truncated or lying WAV headers).
"""

from __future__ import annotations

import json
import struct

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from streamscribe.errors import ProtocolError
from streamscribe.events import AudioFormatSettled, Command, RawAudio
from streamscribe.protocols.common import Close, SendJson
from streamscribe.protocols.deepgram import DeepgramProtocol, parse_options, wav_format
from streamscribe.protocols.deepgram_options import http_error, session_config
from streamscribe.protocols.deepgram_prerecorded import parse_prerecorded

PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

NAMES = [
    "model",
    "language",
    "encoding",
    "sample_rate",
    "channels",
    "multichannel",
    "interim_results",
    "punctuate",
    "smart_format",
    "endpointing",
    "utterance_end_ms",
    "vad_events",
    "keyterm",
    "keywords",
    "extra",
    "tag",
    "diarize",
    "redact",
    "utterances",
    "utt_split",
    "summarize",
]
VALUES = st.one_of(
    st.sampled_from(
        ["true", "false", "linear16", "mulaw", "alaw", "opus", "16000", "8000", "2", "multi"]
    ),
    st.sampled_from(["-1", "1e999", "nan", "9" * 400, "en-US", "a:b", ":", "\ud800", ""]),
    st.text(max_size=40),
)


def check_refusal(exc: BaseException) -> None:
    assert isinstance(exc, ProtocolError), f"{type(exc).__name__}: {exc!r}"[:300]
    assert exc.reason.strip()
    status, body = http_error(exc.kind, exc.reason)
    assert 400 <= status < 600
    json.dumps(body, ensure_ascii=False).encode("utf-8")  # as JSONResponse writes it


@PROPERTY
@given(st.lists(st.tuples(st.sampled_from(NAMES), VALUES), max_size=12))
@example([("encoding", "linear16"), ("sample_rate", "9" * 5000)])
@example([("endpointing", "nan"), ("utt_split", "1e999")])
@example([("keyterm", "\ud800")] * 3)
def test_options_are_checked_or_refused(items):
    for live in (True, False):
        try:
            opts = parse_options(items) if live else parse_prerecorded(items)
        except Exception as exc:  # noqa: BLE001 - the property is about what escapes
            check_refusal(exc)
            continue
        config = session_config(opts)
        assert 8000 <= config.audio.sample_rate <= 48000
        assert 1 <= config.audio.channels <= 8


def protocol() -> DeepgramProtocol:
    opts = parse_options([("encoding", "linear16"), ("sample_rate", "16000")])
    return DeepgramProtocol(session_config(opts), opts)


def deep(n: int) -> str:
    return "[" * n + "]" * n


@PROPERTY
@given(
    st.one_of(
        st.text(max_size=200),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
            lambda inner: (
                st.lists(inner, max_size=4)
                | st.dictionaries(st.text(max_size=8), inner, max_size=4)
            ),
            max_leaves=12,
        ).map(lambda v: json.dumps(v)),
        st.sampled_from(["KeepAlive", "Finalize", "CloseStream", "Configure"]).flatmap(
            lambda kind: st.dictionaries(
                st.sampled_from(["channel", "keyterms", "features", "x"]),
                st.none() | st.integers() | st.text(max_size=5) | st.lists(st.text(max_size=5)),
                max_size=3,
            ).map(lambda extra: json.dumps({"type": kind, **extra}))
        ),
    )
)
@example(deep(100_000))
@example('{"type": "Finalize", "channel": 1e999}')
@example('{"type": "Finalize", "channel": true}')
@example('{"type": "\ud800"}')
@example('{"type": NaN}')
@example("\ud800 not json")
def test_text_frames_are_commands_or_a_close(text):
    proto = protocol()
    try:
        commands = proto.receive_text(text)
    except Exception as exc:  # noqa: BLE001
        assert isinstance(exc, ProtocolError), f"{type(exc).__name__}: {exc!r}"[:300]
        (close,) = proto.error(exc)
        assert isinstance(close, Close) and close.code == 1008
        assert len(close.reason.encode("utf-8")) <= 123
        return
    assert all(isinstance(c, Command) for c in commands)
    for reply in proto.take_replies():  # answers go out as valid UTF-8 JSON, whatever came in
        for frame in proto.render(reply):
            assert isinstance(frame, SendJson)
            assert json.loads(frame.text.encode("utf-8"))["type"] in (
                "Error",
                "ConfigureSuccess",
                "ConfigureFailure",
            )


@PROPERTY
@given(st.lists(st.binary(max_size=64), max_size=8))
def test_audio_of_any_size_comes_out_in_whole_samples(frames):
    proto = protocol()
    forwarded = b""
    for frame in frames:
        if not frame or frame.startswith(b"{"):
            continue
        for command in proto.receive_bytes(frame):
            assert isinstance(command, RawAudio) and len(command.data) % 2 == 0
            forwarded += command.data
    sent = b"".join(f for f in frames if f and not f.startswith(b"{"))
    assert sent.startswith(forwarded) and len(sent) - len(forwarded) <= 1


def riff(chunks: bytes) -> bytes:
    return b"RIFF" + struct.pack("<I", len(chunks) + 4) + b"WAVE" + chunks


@PROPERTY
@given(st.binary(max_size=120).map(lambda b: riff(b)) | st.binary(max_size=120))
@example(riff(b"fmt " + struct.pack("<I", 2**32 - 1)))
@example(riff(b"data" + struct.pack("<I", 0)))
@example(riff(b"fmt " + struct.pack("<I", 16) + struct.pack("<HHIIHH", 1, 0, 0, 0, 0, 16)))
def test_wav_headers_are_read_or_refused(data):
    try:
        found = wav_format(data)
    except Exception as exc:  # noqa: BLE001
        check_refusal(exc)
        return
    if found is not None:
        fmt, offset = found
        assert 8000 <= fmt.sample_rate <= 48000 and 1 <= fmt.channels <= 8
        assert 12 < offset <= len(data)


# ------------------------------------------------------------------ streams without encoding=


def wav_header(channels: int, rate: int = 16000) -> bytes:
    fmt = struct.pack("<HHIIHH", 1, channels, rate, rate * 2 * channels, 2 * channels, 16)
    body = b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt + b"data" + struct.pack("<I", 0)
    return b"RIFF" + struct.pack("<I", len(body)) + body


FRAMES = st.lists(
    st.one_of(
        st.sampled_from(
            [
                '{"type": "KeepAlive"}',
                '{"type": "Finalize"}',
                '{"type": "Finalize", "channel": 1}',
                '{"type": "CloseStream"}',
                '{"type": "Configure", "keyterms": ["a"]}',
                "not json",
            ]
        ),
        st.sampled_from([b"", wav_header(1), wav_header(2), b"\x01\x02" * 8]),
        st.binary(max_size=24),
    ),
    max_size=10,
)


@PROPERTY
@given(FRAMES, st.booleans())
def test_the_format_is_settled_once_and_before_any_audio(frames, multichannel):
    """Whatever comes first, the session loop sees at most one AudioFormatSettled, never after
    a RawAudio, and the wait ends in a settled format, a Terminate or a refusal."""
    query = [("model", "nova-3")] + ([("multichannel", "true")] if multichannel else [])
    opts = parse_options(query)
    proto = DeepgramProtocol(session_config(opts), opts)
    seen: list[Command] = []
    for frame in frames:
        try:
            if isinstance(frame, str):
                seen += proto.receive_text(frame)
            else:
                seen += proto.receive_bytes(frame)
        except Exception as exc:  # noqa: BLE001
            check_refusal(exc)
            (close,) = proto.error(exc)
            assert close.code == 1008
            break
    settled = [i for i, c in enumerate(seen) if isinstance(c, AudioFormatSettled)]
    audio = [i for i, c in enumerate(seen) if isinstance(c, RawAudio)]
    assert len(settled) <= 1
    if audio:
        assert settled and settled[0] < audio[0]
    if settled:
        assert proto.config.audio == seen[settled[0]].audio
