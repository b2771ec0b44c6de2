"""ACS media frames in, without sockets: the metadata-then-data state machine, encodings, silent
packets, the close code and reason of every refusal, and the call clock (gaps, late packets)."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamscribe.errors import ProtocolError
from streamscribe.protocols.acs_media import (
    AcsMediaReader,
    CallClock,
    MediaFormat,
    MediaPacket,
    MediaState,
    parse_timestamp,
)


def frame(kind: str, **payload) -> str:
    return json.dumps({"kind": kind, kind[0].lower() + kind[1:]: payload})


def metadata(encoding="PCM", rate=16000, **extra) -> str:
    return frame("AudioMetadata", subscriptionId="sub", encoding=encoding, sampleRate=rate, **extra)


def audio(data: bytes | None = b"\x01\x00" * 320, **extra) -> str:
    payload = dict(extra)
    if data is not None:
        payload["data"] = base64.b64encode(data).decode()
    return frame("AudioData", **payload)


def refused(reader: AcsMediaReader, text: str) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        reader.receive_text(text)
    return info.value


def test_metadata_then_audio_from_two_participants():
    reader = AcsMediaReader()
    [fmt] = reader.receive_text(metadata(channels=1, length=640))
    assert fmt == MediaFormat("pcm_s16le", 16000, 1, 640, "sub")
    assert reader.state is MediaState.STREAMING
    [a] = reader.receive_text(
        audio(participantRawID="4:+1555", timestamp="2024-11-15T19:16:12.925Z", silent=False)
    )
    [b] = reader.receive_text(audio(participantRawID="8:acs:x_y"))
    assert a == MediaPacket("4:+1555", b"\x01\x00" * 320, False, 1731698172925)
    assert b.participant == "8:acs:x_y" and b.timestamp_ms is None
    assert reader.participants == {"4:+1555", "8:acs:x_y"}


@pytest.mark.parametrize(
    ("encoding", "internal", "silence"),
    [
        ("PCM", "pcm_s16le", b"\x00"),
        ("PCMU", "pcm_mulaw", b"\xff"),
        ("mulaw", "pcm_mulaw", b"\xff"),
        ("PCMA", "pcm_alaw", b"\xd5"),
        ("g711_alaw", "pcm_alaw", b"\xd5"),
    ],
)
def test_telephony_encodings_and_silent_packets_become_codec_silence(encoding, internal, silence):
    reader = AcsMediaReader()
    [fmt] = reader.receive_text(metadata(encoding, 8000, length=160))
    assert fmt.encoding == internal
    [with_data] = reader.receive_text(audio(b"\x10\x20" * 80, silent=True))
    [without] = reader.receive_text(audio(None, silent=True))
    assert with_data.data == silence * 160 and with_data.silent
    assert without.data == silence * 160  # the packet length from the metadata


def test_a_silent_packet_without_length_is_20_ms():
    reader = AcsMediaReader()
    reader.receive_text(metadata("PCM", 24000))
    [p] = reader.receive_text(audio(None, silent=True))
    assert len(p.data) == 960  # 20 ms at 24 kHz, 16-bit
    assert MediaFormat("pcm_s16le", 24000).duration_ms(len(p.data)) == 20


def test_dtmf_frames_are_accepted_and_ignored():
    reader = AcsMediaReader()
    reader.receive_text(metadata())
    assert reader.receive_text(json.dumps({"kind": "DtmfData", "dtmfData": {"data": "5"}})) == []


@pytest.mark.parametrize(
    ("frames", "code", "reason"),
    [
        ([audio()], 1008, "AudioData before AudioMetadata"),
        ([metadata(), metadata()], 1008, "AudioMetadata sent twice"),
        ([metadata("OPUS")], 1003, "'OPUS' is not supported"),
        ([metadata("PCM", 44100)], 1003, "sampleRate '44100'"),
        ([metadata("PCM", True)], 1003, "sampleRate"),
        ([metadata(channels=2)], 1003, "mono"),
        ([metadata(length="640")], 1007, "length"),
        ([metadata(length=10**6)], 1008, "over 2000 ms"),
        (["{"], 1007, "not JSON"),
        (["[1]"], 1007, '"kind"'),
        ([json.dumps({"kind": "AudioData", "audioData": "x"})], 1007, "payload object"),
        ([json.dumps({"kind": "Video"})], 1008, "Unknown frame kind 'Video'"),
        ([metadata(), frame("AudioData", data="@@@@")], 1007, "not valid base64"),
        ([metadata(), frame("AudioData", data="AAAA")], 1007, "3 bytes: not whole"),
        ([metadata(), frame("AudioData", data=5)], 1007, "base64 string"),
        ([metadata(), frame("AudioData")], 1007, "data is missing"),
        ([metadata(), audio(silent="no")], 1007, "silent must be"),
        ([metadata(), audio(participantRawID="")], 1007, "participantRawID"),
        ([metadata(), audio(participantRawID=7)], 1007, "participantRawID"),
        ([metadata(), audio(timestamp="yesterday")], 1007, "not ISO-8601"),
        ([metadata(), audio(timestamp="2024-11-15T19:16:12")], 1007, "no time zone"),
        ([metadata(), frame("AudioData", data="A" * 100_000)], 1008, "more than 2000 ms"),
    ],
)
def test_every_refusal_carries_its_close_code_and_says_why(frames, code, reason):
    reader = AcsMediaReader()
    for text in frames[:-1]:
        reader.receive_text(text)
    error = refused(reader, frames[-1])
    assert error.close_code == code
    assert reason in error.reason


def test_binary_frames_are_refused_with_1003():
    with pytest.raises(ProtocolError) as info:
        AcsMediaReader().receive_bytes(b"\x00\x00")
    assert info.value.close_code == 1003 and "JSON text" in info.value.reason


def test_more_than_16_participants_are_refused():
    reader = AcsMediaReader()
    reader.receive_text(metadata())
    for i in range(16):
        reader.receive_text(audio(participantRawID=f"4:+{i}"))
    assert refused(reader, audio(participantRawID="4:+99")).close_code == 1008
    reader.receive_text(audio(participantRawID="4:+3"))  # a known one goes on


def test_timestamps_with_seven_fraction_digits_and_offsets():
    assert parse_timestamp("2024-11-15T19:16:12.9250000Z") == 1731698172925
    assert parse_timestamp("2024-11-15T20:16:12.925+01:00") == 1731698172925


# ---------------------------------------------------------------------------- the call clock


def test_participants_start_where_their_first_packet_belongs():
    clock = CallClock()
    assert clock.place("a", 1000, 20).start_ms == 0 and clock.positions["a"] == 20
    late_joiner = clock.place("b", 6000, 20)
    assert late_joiner.first and late_joiner.start_ms == 5000
    assert clock.now_ms == 5020


def test_without_timestamps_a_new_participant_joins_at_the_call_s_present():
    clock = CallClock()
    for _ in range(50):
        clock.place("a", None, 20)
    assert clock.place("b", None, 20).start_ms == 1000


def test_a_jump_past_the_jitter_tolerance_is_a_gap_filled_with_silence():
    clock = CallClock(tolerance_ms=100)
    clock.place("a", 0, 20)
    assert clock.place("a", 20 + 60, 20).gap_ms == 0  # jitter: played straight on
    place = clock.place("a", 500, 20)
    assert place.gap_ms == pytest.approx(500 - 40) and place.start_ms == pytest.approx(500)
    assert clock.gaps == 1 and clock.positions["a"] == pytest.approx(520)


def test_a_long_hold_is_shortened_to_max_gap():
    clock = CallClock(max_gap_ms=1000)
    clock.place("a", 0, 20)
    assert clock.place("a", 3_600_000, 20).gap_ms == 1000


def test_a_packet_stamped_before_the_previous_one_is_dropped_not_fatal():
    clock = CallClock()
    clock.place("a", 1000, 20)
    clock.place("a", 1020, 20)
    assert clock.place("a", 1000, 20).dropped
    assert clock.dropped == 1 and clock.positions["a"] == 40
    assert not clock.place("a", 1040, 20).dropped


def test_clock_drift_never_drops_audio():
    clock = CallClock()
    for i in range(1000):  # the sender's clock runs 5% slow: 19 ms stamps for 20 ms packets
        assert not clock.place("a", 19 * i, 20).dropped
    assert clock.positions["a"] == 20_000 and clock.gaps == 0


# ---------------------------------------------------------------------------- any input

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner),
    max_leaves=12,
)
_payload = st.fixed_dictionaries(
    {},
    optional={
        "encoding": _json | st.sampled_from(["PCM", "PCMU", "alaw"]),
        "sampleRate": _json | st.sampled_from([8000, 16000]),
        "channels": _json,
        "length": _json,
        "data": _json | st.binary(max_size=64).map(lambda b: base64.b64encode(b).decode()),
        "participantRawID": _json,
        "silent": _json,
        "timestamp": _json | st.datetimes().map(lambda d: d.isoformat() + "Z"),
    },
)
_frame = st.one_of(
    _json,
    st.builds(
        lambda k, p: {"kind": k, k[:1].lower() + k[1:]: p},
        st.sampled_from(["AudioMetadata", "AudioData", "DtmfData", "X"]),
        _payload,
    ),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_frame, min_size=1, max_size=5))
def test_any_frames_give_packets_or_a_protocol_error_never_a_crash(frames):
    reader = AcsMediaReader()
    for f in frames:
        try:
            out = reader.receive_text(json.dumps(f))
        except ProtocolError as exc:
            assert exc.close_code in (1003, 1007, 1008) and exc.reason
            return
        for item in out:
            assert isinstance(item, MediaFormat | MediaPacket)
