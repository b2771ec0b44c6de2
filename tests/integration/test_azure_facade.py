"""The Azure-shaped `ConversationTranscriber` against the real server: a real two-speaker call
from a file (events in Azure's order, results in ticks, `Guest-N` speakers matching who spoke,
the text against the reference), a push stream stopped with `stop_transcribing_async` (the last
phrase still arrives), and failures reported through `canceled` with Azure's error codes."""

from __future__ import annotations

import json
import threading
import wave

import numpy as np
import pytest
from conftest import free_port
from speech import SHARED_EVAL, reference_speaker, speaker_accuracy, utterances, wer

from streamscribe.audio.files import decode_file
from streamscribe.client import ConversationTranscriber
from streamscribe.client import azure as speechsdk

RATE = 16000
TICKS = 10_000_000  # 100 ns ticks per second


class Recorder:
    """Every event, in order, as (signal name, args)."""

    def __init__(self, transcriber: ConversationTranscriber) -> None:
        self.events: list[tuple[str, object]] = []
        self.stopped = threading.Event()
        for name in (
            "session_started",
            "transcribing",
            "transcribed",
            "canceled",
            "session_stopped",
            "speech_start_detected",
        ):
            getattr(transcriber, name).connect(
                lambda evt, name=name: self.events.append((name, evt))
            )
        transcriber.session_stopped.connect(lambda evt: self.stopped.set())

    def names(self) -> list[str]:
        return [n for n, _ in self.events if n != "speech_start_detected"]

    def of(self, name: str) -> list:
        return [e for n, e in self.events if n == name]


@pytest.fixture(scope="module")
def conversation_file(tmp_path_factory):
    manifest = SHARED_EVAL / "dev" / "manifest.jsonl"
    if not manifest.exists():
        pytest.skip("../shared/eval/dev is absent")
    rows = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]
    row = next(r for r in rows if r["kind"] == "conversation")
    turns = [t for t in row["turns"] if t["end"] <= 34.0]
    audio = decode_file(SHARED_EVAL / "dev" / row["audio"])[: int((turns[-1]["end"] + 1) * RATE)]
    path = tmp_path_factory.mktemp("azure") / "call.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes((np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes())
    return path, turns


@pytest.fixture(scope="module")
def file_session(server, conversation_file):
    from streamscribe.speakers import is_available

    if not is_available():
        pytest.skip("the speakers extra (torch, resemblyzer) is not installed")
    path, turns = conversation_file
    config = speechsdk.SpeechConfig(host=server.ws, subscription="unused-in-open-mode")
    audio_config = speechsdk.audio.AudioConfig(filename=str(path))
    transcriber = speechsdk.transcription.ConversationTranscriber(config, audio_config)
    recorder = Recorder(transcriber)
    transcriber.start_transcribing_async().get(60)
    assert recorder.stopped.wait(180), recorder.names()
    return recorder, turns


def test_events_come_in_azure_order(file_session):
    recorder, _ = file_session
    names = recorder.names()
    assert names[0] == "session_started"
    assert names[-2:] == ["canceled", "session_stopped"]
    assert "transcribing" in names and "transcribed" in names
    session = recorder.of("session_started")[0].session_id
    assert all(e.session_id == session for _, e in recorder.events)
    canceled = recorder.of("canceled")[0]
    assert canceled.cancellation_details.reason is speechsdk.CancellationReason.EndOfStream
    assert canceled.error_code is speechsdk.CancellationErrorCode.NoError
    assert recorder.of("speech_start_detected")


def test_results_have_text_speakers_ticks_and_reasons(file_session):
    recorder, turns = file_session
    partial = [e.result for e in recorder.of("transcribing")]
    final = [e.result for e in recorder.of("transcribed")]
    assert all(r.reason is speechsdk.ResultReason.RecognizingSpeech for r in partial)
    assert all(r.speaker_id == "Unknown" for r in partial)
    assert all(r.reason is speechsdk.ResultReason.RecognizedSpeech for r in final)
    assert {r.speaker_id for r in final} == {"Guest-1", "Guest-2"}
    assert final[0].speaker_id == "Guest-1"
    for r in final:
        assert type(r.offset) is int and type(r.duration) is int and r.duration > 0
        assert r.text[0].isupper() and r.text.endswith((".", "?", "!"))
        assert r.json["NBest"][0]["Words"]
    offsets = [r.offset for r in final]
    assert offsets == sorted(offsets)
    assert final[-1].offset / 10_000_000 <= turns[-1]["end"] + 1
    reference = " ".join(t["text"] for t in turns)
    assert wer(reference, " ".join(r.text for r in final)) <= 0.35


def test_guest_ids_match_who_spoke(file_session):
    recorder, turns = file_session
    final = [e.result for e in recorder.of("transcribed")]

    phrases = [(r.offset / TICKS, (r.offset + r.duration) / TICKS, r.speaker_id) for r in final]
    # a turn that runs across a change of speaker comes as one phrase per speaker, as Azure's
    # transcriber sends them: most phrases have one clear reference speaker
    clear = [p for p in phrases if reference_speaker(p[0], p[1], turns)]
    assert len(clear) >= 3 and len(clear) >= 0.75 * len(phrases), phrases
    assert speaker_accuracy(phrases, turns) >= 0.8, phrases


def test_a_push_stream_stopped_still_gets_its_last_phrase(server):
    speech = utterances(1)
    if not speech:
        pytest.skip("no speech available")
    stream = speechsdk.audio.PushAudioInputStream(
        speechsdk.audio.AudioStreamFormat(samples_per_second=16000)
    )
    config = speechsdk.SpeechConfig(endpoint=server.ws)
    transcriber = ConversationTranscriber(
        config, speechsdk.audio.AudioConfig(stream=stream), speaker_labels=False
    )
    recorder = Recorder(transcriber)
    transcriber.start_transcribing_async().get(30)
    pcm = speech[0].pcm16()
    for i in range(0, len(pcm), 1234):  # odd-sized writes, as an application's buffers come
        stream.write(pcm[i : i + 1234])
    transcriber.stop_transcribing_async().get(60)
    assert recorder.stopped.is_set()
    assert recorder.names()[-1] == "session_stopped" and "canceled" not in recorder.names()
    text = " ".join(e.result.text for e in recorder.of("transcribed"))
    assert wer(speech[0].text, text) <= 0.35, text
    assert {e.result.speaker_id for e in recorder.of("transcribed")} == {"Unknown"}


def test_an_unreachable_server_is_a_connection_failure():
    config = speechsdk.SpeechConfig(host=f"ws://127.0.0.1:{free_port()}")
    stream = speechsdk.audio.PushAudioInputStream()
    transcriber = ConversationTranscriber(config, speechsdk.audio.AudioConfig(stream=stream))
    recorder = Recorder(transcriber)
    transcriber.start_transcribing_async().get(30)
    assert recorder.stopped.wait(30)
    assert recorder.names() == ["canceled", "session_stopped"]
    canceled = recorder.of("canceled")[0]
    assert canceled.reason is speechsdk.CancellationReason.Error
    assert canceled.error_code is speechsdk.CancellationErrorCode.ConnectionFailure
    assert "cannot connect" in canceled.error_details


def test_a_refused_session_is_a_bad_request(server):
    config = speechsdk.SpeechConfig(host=server.ws, speech_recognition_language="xx-XX")
    stream = speechsdk.audio.PushAudioInputStream()
    transcriber = ConversationTranscriber(
        config, speechsdk.audio.AudioConfig(stream=stream), speaker_labels=False
    )
    recorder = Recorder(transcriber)
    transcriber.start_transcribing_async().get(30)
    assert recorder.stopped.wait(30)
    canceled = recorder.of("canceled")[0]
    assert canceled.error_code in (
        speechsdk.CancellationErrorCode.BadRequest,
        speechsdk.CancellationErrorCode.ServiceError,
    ), canceled
    assert "xx" in canceled.error_details
