"""OpenAI file transcription against a real server, through the official `openai` SDK.

Real speech goes up as WAV, MP3 and FLAC; every response format comes back and is checked for
the words (WER against the reference), the SDK's types, seconds as the unit of time, and the
order of the streamed events. Bad requests get OpenAI's error envelope and the right status.
"""

from __future__ import annotations

import io

import av
import httpx
import numpy as np
import openai
import pytest
from compat_cases.openai_batch import client, wav
from speech import joined, normalize, speech_or_skip, wer

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def speech():
    return joined(speech_or_skip(2), gap_s=1.5)


@pytest.fixture(scope="module")
def upload(speech) -> bytes:
    return wav(speech.audio)


def encoded(audio: np.ndarray, fmt: str, codec: str) -> bytes:
    """The audio in another container and codec, encoded with PyAV (FFmpeg)."""
    out = io.BytesIO()
    with av.open(out, "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=16000, layout="mono")
        frame = av.AudioFrame.from_ndarray(audio[None, :], format="fltp", layout="mono")
        frame.sample_rate = 16000
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    return out.getvalue()


def test_json_is_the_transcript_with_the_duration_billed(server, speech, upload):
    result = client(server).audio.transcriptions.create(
        model="whisper-1", file=("speech.wav", upload)
    )
    assert wer(speech.text, result.text) <= 0.35, result.text
    assert result.usage.type == "duration"
    assert result.usage.seconds == pytest.approx(speech.seconds, abs=0.05)  # seconds, not ms


def test_verbose_json_words_and_segments_in_seconds(server, speech, upload):
    result = client(server).audio.transcriptions.create(
        model="whisper-1",
        file=("speech.wav", upload),
        response_format="verbose_json",
        timestamp_granularities=["word", "segment"],
    )
    assert wer(speech.text, result.text) <= 0.35, result.text
    assert result.language == "english"
    assert result.duration == pytest.approx(speech.seconds, abs=0.05)
    assert isinstance(result.segments[0].start, float) and isinstance(result.segments[0].id, int)
    assert len(result.segments) >= 2  # two utterances, 1.5 s apart
    starts = [s.start for s in result.segments]
    assert starts == sorted(starts) and all(s.end > s.start for s in result.segments)
    assert result.segments[-1].end <= speech.seconds + 0.1
    assert normalize(" ".join(s.text for s in result.segments)) == normalize(result.text)
    words = result.words
    assert normalize(" ".join(w.word for w in words)) == normalize(result.text)
    assert all(0 <= w.start <= w.end <= speech.seconds + 0.1 for w in words)
    assert [w.start for w in words] == sorted(w.start for w in words)
    # the second utterance starts after the first one's audio and the gap began
    first_len = speech_or_skip(2)[0].seconds
    second = next(s for s in result.segments if s.start >= first_len)
    assert second.start < first_len + 1.5 + 1.0


def test_text_srt_and_vtt_are_plain_text_bodies(server, speech, upload):
    sdk = client(server)
    text = sdk.audio.transcriptions.create(
        model="whisper-1", file=("speech.wav", upload), response_format="text"
    )
    assert isinstance(text, str) and text.endswith("\n") and wer(speech.text, text) <= 0.35
    srt = sdk.audio.transcriptions.create(
        model="whisper-1", file=("speech.wav", upload), response_format="srt"
    )
    assert srt.startswith("1\n00:00:") and " --> " in srt and "," in srt.split("\n")[1]
    vtt = sdk.audio.transcriptions.create(
        model="whisper-1", file=("speech.wav", upload), response_format="vtt"
    )
    assert vtt.startswith("WEBVTT\n") and "." in vtt.split("\n")[2]
    cues = [line for line in vtt.split("\n") if line and "-->" not in line][1:]
    assert wer(speech.text, " ".join(cues)) <= 0.35


@pytest.mark.parametrize(("name", "fmt", "codec"), [("a.mp3", "mp3", "libmp3lame"),
                                                    ("a.flac", "flac", "flac")])  # fmt: skip
def test_compressed_uploads_decode(server, name, fmt, codec):
    one = speech_or_skip(1)[0]
    result = client(server).audio.transcriptions.create(
        model="gpt-4o-mini-transcribe", file=(name, encoded(one.audio, fmt, codec))
    )
    assert wer(one.text, result.text) <= 0.35, result.text


def test_streaming_sends_deltas_that_add_up_to_done(server, speech, upload):
    events = list(
        client(server).audio.transcriptions.create(
            model="gpt-4o-transcribe",
            file=("speech.wav", upload),
            stream=True,
            include=["logprobs"],
        )
    )
    types = [e.type for e in events]
    assert types[-1] == "transcript.text.done" and types.count("transcript.text.done") == 1
    deltas = [e for e in events if e.type == "transcript.text.delta"]
    assert len(deltas) >= 2  # one per speech region, sent as each is decoded
    assert all(d.delta.startswith(" ") for d in deltas[1:])
    done = events[-1]
    assert "".join(d.delta for d in deltas) == done.text
    assert wer(speech.text, done.text) <= 0.35, done.text
    assert all(lp.logprob <= 0 for d in deltas for lp in d.logprobs)


def error_of(call) -> openai.APIStatusError:
    with pytest.raises(openai.APIStatusError) as info:
        call()
    body = info.value.body
    assert isinstance(body, dict) and set(body) >= {"message", "type", "param", "code"}, body
    return info.value


def test_bad_parameters_get_openais_error_envelope(server, upload):
    sdk = client(server)
    bad = error_of(
        lambda: sdk.audio.transcriptions.create(
            model="whisper-1", file=("a.wav", upload), response_format="diarized_json"
        )
    )
    assert bad.status_code == 400 and isinstance(bad, openai.BadRequestError)
    assert bad.body["param"] == "response_format" and "not supported" in bad.body["message"]
    hot = error_of(
        lambda: sdk.audio.transcriptions.create(
            model="whisper-1", file=("a.wav", upload), temperature=1.5
        )
    )
    assert hot.status_code == 400 and hot.body["param"] == "temperature"  # 0-1 only
    extra = error_of(
        lambda: sdk.audio.transcriptions.create(
            model="whisper-1", file=("a.wav", upload), extra_body={"speed": "2"}
        )
    )
    assert extra.body["code"] == "unknown_parameter" and "speed" in extra.body["message"]


def test_a_file_that_is_not_audio_names_the_file(server):
    bad = error_of(
        lambda: client(server).audio.transcriptions.create(
            model="whisper-1", file=("notes.m4a", b"these are meeting notes, not audio\n" * 40)
        )
    )
    assert bad.status_code == 400 and bad.body["param"] == "file"
    assert "notes.m4a" in bad.body["message"]


def test_missing_file_and_a_json_body_are_refused(server):
    elsewhere = httpx.post(
        server.http + "/v1/audio/transcriptions", data={"model": "whisper-1"}, files={"x": b""}
    )
    assert elsewhere.status_code == 400 and elsewhere.json()["error"]["param"] == "x"
    as_json = httpx.post(server.http + "/v1/audio/transcriptions", json={"model": "whisper-1"})
    assert as_json.status_code == 400
    assert "multipart/form-data" in as_json.json()["error"]["message"]
    form_only = httpx.post(
        server.http + "/v1/audio/transcriptions",
        files={"model": (None, "whisper-1")},
    )
    assert form_only.status_code == 400
    assert form_only.json()["error"]["param"] == "file"


def test_an_upload_over_25_mb_gets_413(server):
    big = b"\0" * (26 * 1024 * 1024)
    too_big = error_of(
        lambda: client(server).audio.transcriptions.create(model="whisper-1", file=("a.wav", big))
    )
    assert too_big.status_code == 413
    assert too_big.body["code"] == "file_too_large" and "25 MB" in too_big.body["message"]
    # the server is fine afterwards
    assert httpx.get(server.http + "/readyz", timeout=5).status_code == 200


def test_ephemeral_keys_are_refused_naming_what_to_use(server):
    answer = httpx.post(server.http + "/v1/realtime/client_secrets", json={})
    assert answer.status_code == 404
    assert "API key" in answer.json()["error"]["message"]


def test_uploads_are_kept_as_sessions(server, speech, upload):
    result = client(server).audio.transcriptions.create(
        model="whisper-1", file=("speech.wav", upload)
    )
    listed = httpx.get(server.http + "/v1/sessions", params={"limit": 500}, timeout=10).json()
    ours = [s for s in listed["sessions"] if s["protocol"] == "openai-batch"]
    assert ours and all(s["ended"] and s["end_reason"] == "terminated" for s in ours)
    newest = max(ours, key=lambda s: s["started"])
    assert newest["audio_seconds"] == pytest.approx(speech.seconds, abs=0.05)
    detail = httpx.get(f"{server.http}/v1/sessions/{newest['id']}", timeout=10).json()
    stored = " ".join(t["text"] for t in detail["turns"])
    assert normalize(stored) == normalize(result.text)
