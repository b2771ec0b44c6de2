"""The unmodified official `deepgram-sdk` (7.17) pre-recorded client against the real server.

`transcribe_file` posts the bytes of a real recording to `POST /v1/listen` on our host; the
answer must match the reference, in Deepgram's response shape (float seconds, real confidences,
one `results.channels` entry per channel with `multichannel=true`, `utterances` when asked). The
two-channel file holds two different utterances, one per channel, one after the other, so both
the per-channel transcripts and the down-mix can be checked against their references.
"""

from __future__ import annotations

import io
import wave

import av
import httpx
import numpy as np
import pytest
from deepgram import DeepgramClient
from deepgram.core.api_error import ApiError
from deepgram.environment import DeepgramClientEnvironment
from speech import speech_or_skip, wer

from streamscribe.audio.codecs import encode_mulaw
from streamscribe.audio.resample import resample

pytestmark = pytest.mark.timeout(120)


def client(server) -> DeepgramClient:
    environment = DeepgramClientEnvironment(
        base=server.http, production=server.ws, agent=server.ws, agent_rest=server.http
    )
    return DeepgramClient(api_key="local-key", environment=environment)


def wav(*channels: np.ndarray, rate: int = 16000) -> bytes:
    n = max(len(c) for c in channels)
    frames = np.zeros((n, len(channels)), np.float32)
    for i, c in enumerate(channels):
        frames[: len(c), i] = c
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(len(channels))
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((np.clip(frames, -1, 1) * 32767).astype("<i2").tobytes())
    return buf.getvalue()


def mp3(audio: np.ndarray) -> bytes:
    """The recording as a 44.1 kHz MP3, the kind of file people upload."""
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp3") as container:
        stream = container.add_stream("libmp3lame", rate=44100, layout="mono")
        samples = resample(audio, 16000, 44100)
        frame = av.AudioFrame.from_ndarray(samples[None, :], format="flt", layout="mono")
        frame.sample_rate = 44100
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return buf.getvalue()


def transcript(result, channel: int = 0) -> str:
    return result.results.channels[channel].alternatives[0].transcript


@pytest.fixture(scope="module")
def utterances():
    return speech_or_skip(3)


@pytest.fixture(scope="module")
def two_channel(utterances):
    """Left: the first utterance then silence; right: silence then the third utterance."""
    first, third = utterances[0].audio, utterances[2].audio
    gap = np.zeros(16000, np.float32)
    left = np.concatenate([first, gap, np.zeros_like(third)])
    right = np.concatenate([np.zeros_like(first), gap, third])
    return wav(left, right)


@pytest.fixture(scope="module")
def mono_result(server, utterances):
    return client(server).listen.v1.media.transcribe_file(
        request=wav(utterances[1].audio), model="nova-3", punctuate=True, utterances=True
    )


def test_a_wav_file_is_transcribed(mono_result, utterances):
    text = transcript(mono_result)
    assert wer(utterances[1].text, text) <= 0.35, (utterances[1].text, text)
    assert text[0].isupper()  # punctuate=true


def test_the_response_shape_types_and_units(mono_result, utterances):
    meta = mono_result.metadata
    assert meta.duration == pytest.approx(utterances[1].seconds, abs=0.05)
    assert meta.channels == 1 and len(meta.sha256) == 64 and meta.models
    assert meta.created.tzinfo is not None  # the SDK parses `created` as a datetime
    alt = mono_result.results.channels[0].alternatives[0]
    assert 0.3 < alt.confidence <= 1.0  # a real confidence
    last = 0.0
    for w in alt.words:
        assert isinstance(w.start, float) and isinstance(w.end, float)
        assert last - 0.01 <= w.start <= w.end <= meta.duration + 0.01
        assert w.word == w.word.lower() and w.punctuated_word
        last = w.end
    utterances_out = mono_result.results.utterances
    assert utterances_out and all(u.channel == 0 for u in utterances_out)
    joined = " ".join(u.transcript for u in utterances_out)
    assert joined == alt.transcript


def test_the_transcript_is_kept_as_a_session(server, mono_result):
    r = httpx.get(f"{server.http}/v1/sessions/{mono_result.metadata.request_id}", timeout=10)
    assert r.status_code == 200, r.text
    assert r.json()["protocol"] == "deepgram-prerecorded"


def test_a_two_channel_file_gives_one_entry_per_channel(server, utterances, two_channel):
    result = client(server).listen.v1.media.transcribe_file(
        request=two_channel, model="nova-3", multichannel=True, utterances=True
    )
    assert result.metadata.channels == 2 and len(result.results.channels) == 2
    left, right = transcript(result, 0), transcript(result, 1)
    assert wer(utterances[0].text, left) <= 0.35, (utterances[0].text, left)
    assert wer(utterances[2].text, right) <= 0.35, (utterances[2].text, right)
    assert wer(utterances[2].text, left) > 0.6  # each channel has only its own speaker
    right_words = result.results.channels[1].alternatives[0].words
    assert right_words[0].start > utterances[0].seconds  # times are the channel's own
    assert {u.channel for u in result.results.utterances} == {0, 1}


def test_without_multichannel_the_channels_are_mixed(server, utterances, two_channel):
    result = client(server).listen.v1.media.transcribe_file(request=two_channel, model="nova-3")
    assert len(result.results.channels) == 1 and result.metadata.channels == 1
    reference = f"{utterances[0].text} {utterances[2].text}"
    assert wer(reference, transcript(result)) <= 0.35, (reference, transcript(result))


def test_an_mp3_file(server, utterances):
    result = client(server).listen.v1.media.transcribe_file(
        request=mp3(utterances[2].audio), model="nova-3", smart_format=True
    )
    assert wer(utterances[2].text, transcript(result)) <= 0.35
    paragraphs = result.results.channels[0].alternatives[0].paragraphs
    assert paragraphs is not None and paragraphs.paragraphs  # smart_format implies paragraphs


def test_raw_8_khz_mulaw_with_encoding_and_sample_rate(server, utterances):
    data = encode_mulaw(resample(utterances[0].audio, 16000, 8000))
    # SDK 7.17's transcribe_file has no sample_rate argument: it goes as an extra parameter
    result = client(server).listen.v1.media.transcribe_file(
        request=data,
        model="nova-2-phonecall",
        encoding="mulaw",
        request_options={"additional_query_parameters": {"sample_rate": 8000}},
    )
    assert wer(utterances[0].text, transcript(result)) <= 0.35, transcript(result)
    assert result.metadata.duration == pytest.approx(utterances[0].seconds, abs=0.05)


# ------------------------------------------------------------------ refusals, Deepgram's shape


def refusal(call) -> tuple[int, dict]:
    with pytest.raises(ApiError) as info:
        call()
    body = info.value.body
    assert set(body) == {"err_code", "err_msg", "request_id"}, body
    return info.value.status_code, body


def test_a_url_is_refused_this_server_fetches_nothing(server):
    status, body = refusal(
        lambda: client(server).listen.v1.media.transcribe_url(
            url="https://dpgr.am/spacewalk.wav", model="nova-3"
        )
    )
    assert status == 400 and "URL" in body["err_msg"] and "body" in body["err_msg"]


def test_bytes_that_are_not_audio_are_refused(server):
    status, body = refusal(
        lambda: client(server).listen.v1.media.transcribe_file(
            request=b"this is not audio at all" * 100, model="nova-3"
        )
    )
    assert status == 400 and "failed to process audio" in body["err_msg"]
    assert ".upload" not in body["err_msg"]  # no server paths in reasons


@pytest.mark.parametrize(
    ("params", "needle"),
    [({"summarize": "v2"}, "summarize"), ({"detect_language": True}, "detect_language")],
)
def test_features_not_built_are_refused_by_name(server, utterances, params, needle):
    status, body = refusal(
        lambda: client(server).listen.v1.media.transcribe_file(
            request=wav(utterances[0].audio[:16000]), model="nova-3", **params
        )
    )
    assert status == 400 and body["err_msg"].startswith(needle)


def test_an_empty_body_is_refused(server):
    r = httpx.post(f"{server.http}/v1/listen", content=b"", timeout=10)
    assert r.status_code == 400 and "Empty request body" in r.json()["err_msg"]
