"""The unmodified Azure Speech SDK (`azure-cognitiveservices-speech`, pinned in pyproject's dev
extra) against a real server, changing only `SpeechConfig(host="ws://HOST:PORT")`.

Every recognizer on real speech: ConversationTranscriber on a two-speaker conversation (partials
then finals, Guest-N speaker ids from live diarization, events in order), SpeechRecognizer
single-shot (`recognize_once` walks a file utterance by utterance) and continuous with the
detailed format and word timestamps on an 8 kHz push stream, a pinned and an auto-detected
language, TranslationRecognizer into English. Errors are `canceled` with the SDK's own codes and
never a reconnect loop: an unsupported option, a server that refuses (another limit, no
multilingual model), a bad key (`AuthenticationFailure`); and `stop_*_async` always completes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from compat_cases.azure_usp import push_stream, run_recognizer, speech_config
from conftest import start_server
from speech import (
    SHARED_EVAL,
    joined,
    reference_speaker,
    speaker_accuracy,
    speech_or_skip,
    wer,
)

from streamscribe.audio.files import decode_file
from streamscribe.audio.resample import resample
from streamscribe.audio.wav import WavWriter

speechsdk = pytest.importorskip("azure.cognitiveservices.speech")
pytestmark = pytest.mark.timeout(240)

RATE = 16000
TICKS = 10_000_000  # per second


def pcm16(audio: np.ndarray) -> bytes:
    return (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()


def wav_file(path, audio: np.ndarray, rate: int = RATE):
    writer = WavWriter(path, rate, 1)
    writer.write(audio.astype(np.float32))
    writer.close()
    return path


def multilingual_clip(language: str) -> tuple[np.ndarray, str]:
    manifest = SHARED_EVAL / "multilingual" / "manifest.jsonl"
    if not manifest.exists():
        pytest.skip("../shared/eval/multilingual is absent")
    rows = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]
    row = next(r for r in rows if r["kind"] == "utterance" and r["language"] == language)
    return decode_file(SHARED_EVAL / "multilingual" / row["audio"]), row["text"]


def needs_multilingual(server) -> None:
    info = httpx.get(server.http + "/v1/info", timeout=10).json()
    if not info.get("multilingual"):
        pytest.skip("the server has no multilingual model (the `multilingual` extra: base)")


@pytest.fixture(scope="module")
def two_utterances():
    return joined(speech_or_skip(2), gap_s=1.6)


# ------------------------------------------------------------------ ConversationTranscriber


def conversation(max_s: float = 34.0) -> tuple[np.ndarray, list[dict]]:
    manifest = SHARED_EVAL / "dev" / "manifest.jsonl"
    if not manifest.exists():
        pytest.skip("../shared/eval/dev is absent: no two-speaker conversation")
    rows = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]
    row = next(r for r in rows if r["kind"] == "conversation")
    audio = decode_file(SHARED_EVAL / "dev" / row["audio"])
    turns = [t for t in row["turns"] if t["end"] <= max_s]
    return audio[: int(turns[-1]["end"] * RATE) + RATE // 2], turns


def test_conversation_transcriber_two_speakers(server):
    from streamscribe.speakers import is_available

    if not is_available():
        pytest.skip("the speakers extra (torch, resemblyzer) is not installed")
    audio, turns = conversation()
    run = run_recognizer("conversation", speech_config(server.ws), pcm16(audio))
    assert run.stopped, run.names
    names = run.names
    assert names[0] == "session_started" and names[-1] == "session_stopped", names
    assert names.count("session_stopped") == 1
    cancel = run.canceled
    assert cancel is None or (cancel.reason, cancel.code) == ("EndOfStream", "NoError"), cancel
    # partials come before their final, with the whole phrase so far and no speaker yet
    assert names.index("transcribing") < names.index("transcribed")
    assert all(e.speaker == "Unknown" for e in run.of("transcribing"))
    finals = run.finals
    assert wer(" ".join(t["text"] for t in turns), run.transcript) <= 0.35, run.transcript
    speakers = [e.speaker for e in finals]
    assert all(s.startswith("Guest-") for s in speakers), speakers
    assert set(speakers) == {"Guest-1", "Guest-2"}, speakers
    assert speakers[0] == "Guest-1"
    # offsets in ticks from the start of the stream, in order, within the audio
    offsets = [e.offset for e in finals]
    assert offsets == sorted(offsets) and offsets[-1] < len(audio) / RATE * TICKS
    first = turns[0]
    assert abs(finals[0].offset / TICKS - first["start"]) < 1.5, finals[0].offset
    # a turn across a change of speaker is one phrase per speaker, as Azure's transcriber sends
    phrases = [(e.offset / TICKS, (e.offset + e.duration) / TICKS, e.speaker) for e in finals]
    clear = [p for p in phrases if reference_speaker(p[0], p[1], turns)]
    assert len(clear) >= 3 and len(clear) >= 0.75 * len(phrases), phrases
    assert speaker_accuracy(phrases, turns) >= 0.8, phrases


def test_a_reply_without_a_pause_is_a_phrase_of_its_own(server):
    """Azure's transcriber ends a phrase where the speaker changes; our turns end on silence.
    The conversation's third and fourth turns (two voices) are joined with a 100 ms pause,
    after its first two turns (both voices heard): one turn for the engine, two phrases with
    two Guest ids for the SDK."""
    from streamscribe.speakers import is_available

    if not is_available():
        pytest.skip("the speakers extra (torch, resemblyzer) is not installed")
    audio, turns = conversation()
    first, reply = turns[2], turns[3]
    assert first["speaker"] != reply["speaker"]

    def voiced(turn: dict) -> np.ndarray:
        """The turn's audio from its first to its last loud 20 ms (its silences cut off)."""
        clip = audio[int(turn["start"] * RATE) : int(turn["end"] * RATE)]
        frames = clip[: len(clip) // 320 * 320].reshape(-1, 320)
        loud = np.flatnonzero(np.sqrt((frames**2).mean(axis=1)) > 0.1 * np.abs(clip).max())
        return clip[loud[0] * 320 : (loud[-1] + 1) * 320]

    gap = np.zeros(RATE // 10, dtype=np.float32)
    joined_audio = np.concatenate(
        [
            audio[: int(turns[1]["end"] * RATE)],  # both voices, each in its own turn
            np.zeros(RATE * 3 // 2, dtype=np.float32),
            voiced(first),
            gap,
            voiced(reply),
            np.zeros(RATE, dtype=np.float32),
        ]
    )
    run = run_recognizer("conversation", speech_config(server.ws), pcm16(joined_audio))
    assert run.stopped, run.names
    joined_start = (turns[1]["end"] + 1.5) * TICKS
    late = [e for e in run.finals if e.offset >= joined_start - TICKS // 4]
    said = [(e.speaker, e.text) for e in late]
    assert len(late) == 2, [(e.offset / TICKS, e.speaker, e.text) for e in run.finals]
    assert late[0].speaker != late[1].speaker, said
    assert wer(first["text"], late[0].text) <= 0.4, said
    # Whisper's final decode of the joined turn stops where the voice changes; one more decode
    # of the audio after it hears the reply, to its end (the last partial ended before
    # "...when it is a crayfish": those words came only from that decode)
    assert "is a lobster not a lobster" in late[1].text.lower(), said
    assert "when it is a" in late[1].text.lower(), said
    assert wer(reply["text"], late[1].text) <= 0.25, said
    guests = {e.speaker for e in run.finals[:2]}
    assert {late[0].speaker, late[1].speaker} == guests  # the voices heard before


# ------------------------------------------------------------------ SpeechRecognizer


def test_recognize_once_walks_a_file_utterance_by_utterance(server, two_utterances, tmp_path):
    parts = speech_or_skip(2)
    path = wav_file(tmp_path / "two.wav", two_utterances.audio)
    recognizer = speechsdk.SpeechRecognizer(
        speech_config=speech_config(server.ws),
        audio_config=speechsdk.audio.AudioConfig(filename=str(path)),
    )
    # each call returns the next phrase; the server may end a phrase at a pause inside an
    # utterance (as the cloud does), so the phrases are grouped by where they start in the file
    results = []
    for _ in range(8):
        results.append(recognizer.recognize_once_async().get())
        if results[-1].reason != speechsdk.ResultReason.RecognizedSpeech:
            break
    spoken = results[:-1]
    assert results[-1].reason == speechsdk.ResultReason.NoMatch, [  # only silence is left
        (r.reason, r.text) for r in results
    ]
    assert len(spoken) >= 2, [(r.reason, r.text) for r in results]
    for result in spoken:
        assert result.text[0].isupper() and result.text[-1] in ".?!", result.text
    # the second utterance starts after the first one and the gap, on the file's clock
    second_start = (len(parts[0].audio) / RATE + 1.6) * TICKS
    offsets = [r.offset for r in spoken]
    assert offsets == sorted(offsets), offsets
    first = [r.text for r in spoken if r.offset < second_start - 0.5 * TICKS]
    second = [r for r in spoken if r.offset >= second_start - 0.5 * TICKS]
    assert first and second, offsets
    assert abs(second[0].offset - second_start) < 1.0 * TICKS, second[0].offset
    for part, texts in ((parts[0], first), (parts[1], [r.text for r in second])):
        assert wer(part.text, " ".join(texts)) <= 0.35, (part.text, texts)


def test_continuous_detailed_with_word_timestamps_at_8khz(server, two_utterances):
    config = speech_config(server.ws)
    config.output_format = speechsdk.OutputFormat.Detailed
    config.request_word_level_timestamps()
    config.speech_recognition_language = "en-GB"
    audio8k = resample(two_utterances.audio, RATE, 8000)
    run = run_recognizer("speech", config, pcm16(audio8k), rate=8000)
    assert run.stopped, run.names
    assert wer(two_utterances.text, run.transcript) <= 0.35, run.transcript
    for event in run.finals:
        detail = json.loads(event.json)
        best = detail["NBest"][0]
        assert best["Display"] == event.text and best["Lexical"] == best["Lexical"].lower()
        words = best["Words"]
        assert [w["Word"] for w in words] == best["Lexical"].split()
        starts = [w["Offset"] for w in words]
        assert starts == sorted(starts)
        assert event.offset <= starts[0] and starts[-1] < event.offset + event.duration
        assert all(w["Duration"] > 0 for w in words)
        assert 0 < best["Confidence"] <= 1
    assert run.stop_seconds < 10


def test_telephone_mulaw_at_8khz(server):
    """G.711 mu-law, as AudioStreamFormat(wave_stream_format=MULAW) sends it (WAVE tag 7)."""
    from streamscribe.audio.codecs import encode_mulaw

    part = speech_or_skip(1)[0]
    payload = encode_mulaw(resample(part.audio, RATE, 8000))
    run = run_recognizer("speech", speech_config(server.ws), payload, rate=8000, mulaw=True)
    assert run.stopped, run.names
    assert wer(part.text, run.transcript) <= 0.35, run.transcript


@pytest.mark.skipif(
    not any(Path("/proc/asound").glob("card*/pcm*c")), reason="no audio capture device here"
)
def test_microphone_where_a_device_exists(server):
    audio = speechsdk.audio.AudioConfig(use_default_microphone=True)
    run = run_recognizer("conversation", speech_config(server.ws), audio=audio, stop_after=3)
    assert run.stopped and run.stop_seconds < 15, run.names
    cancel = run.canceled
    assert cancel is None or cancel.reason != "Error", cancel


def test_auto_detected_language_and_translation_to_english(server):
    needs_multilingual(server)
    german, reference = multilingual_clip("de")
    auto = speechsdk.languageconfig.AutoDetectSourceLanguageConfig(languages=["en-US", "de-DE"])
    stream, audio = push_stream()
    recognizer = speechsdk.SpeechRecognizer(
        speech_config=speech_config(server.ws),
        auto_detect_source_language_config=auto,
        audio_config=audio,
    )
    stream.write(pcm16(german))
    stream.close()
    result = recognizer.recognize_once_async().get()
    assert result.reason == speechsdk.ResultReason.RecognizedSpeech, result
    assert speechsdk.AutoDetectSourceLanguageResult(result).language == "de-DE"
    assert wer(reference, result.text) <= 0.6, result.text

    config = speechsdk.translation.SpeechTranslationConfig(
        host=server.ws, speech_recognition_language="de-DE", target_languages=("en",)
    )
    run = run_recognizer("translation", config, pcm16(german))
    assert run.stopped, run.names
    finals = [e for e in run.of("recognized") if e.reason == "TranslatedSpeech"]
    assert finals, run.events
    english = " ".join(e.result.translations["en"] for e in finals).lower()
    source = " ".join(e.text for e in finals)
    assert wer(reference, source) <= 0.6, source
    assert "hong kong" in english and "island" in english, english


# ------------------------------------------------------------------ errors and stopping


def test_unsupported_options_are_canceled_with_the_reason(server):
    stream, audio = push_stream()
    recognizer = speechsdk.SpeechRecognizer(
        speech_config=speech_config(server.ws), audio_config=audio
    )
    speechsdk.PronunciationAssessmentConfig(reference_text="hello").apply_to(recognizer)
    stream.write(b"\0" * 32000)
    stream.close()
    t0 = time.monotonic()
    result = recognizer.recognize_once_async().get()
    assert time.monotonic() - t0 < 5  # no reconnect loop
    details = result.cancellation_details
    assert details.code == speechsdk.CancellationErrorCode.BadRequest, details
    assert "pronunciation assessment" in details.error_details, details.error_details


def test_stop_transcribing_completes_mid_speech(server, two_utterances):
    run = run_recognizer(
        "conversation",
        speech_config(server.ws),
        two_utterances.pcm16(),
        realtime=1.0,
        stop_after=len(two_utterances.audio) / RATE - 1.0,
        timeout=30,
    )
    assert run.stop_seconds < 15, run.stop_seconds
    assert run.stopped and run.names[-1] == "session_stopped", run.names
    assert run.finals, run.names  # the words before stop still arrived
    cancel = run.canceled
    assert cancel is None or cancel.reason != "Error", cancel


@pytest.fixture(scope="module")
def keyed(tmp_path_factory):
    """A server that needs keys, with one key allowed a single stream, no multilingual model
    (a session that needs one is refused with the fix) and a 5 s idle timeout."""
    data = str(tmp_path_factory.mktemp("azure-keys"))

    def create(*args: str) -> str:
        made = subprocess.run(
            [
                sys.executable,
                "-m",
                "streamscribe",
                "keys",
                "create",
                *args,
                "--data-dir",
                str(data),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "NO_COLOR": "1"},
        )
        assert made.returncode == 0, made.stderr
        return made.stdout.strip()

    key, single = create("azure"), create("single", "--max-streams", "1")
    env = {"STREAMSCRIBE_MULTILINGUAL_MODEL": "", "STREAMSCRIBE_IDLE_TIMEOUT_SECONDS": "5"}
    server = start_server(Path(data), env=env)
    try:
        yield server, key, single
    finally:
        server.process.terminate()
        try:
            server.process.wait(30)
        except subprocess.TimeoutExpired:
            server.process.kill()


def test_keys_and_tokens(keyed, two_utterances):
    server, key, _ = keyed
    parts = speech_or_skip(1)
    bad = run_recognizer("conversation", speech_config(server.ws, "not-a-key"), b"\0" * 3200)
    cancel = bad.canceled
    assert cancel is not None and cancel.code == "AuthenticationFailure", bad.events
    assert bad.stopped and bad.stop_seconds < 5 and bad.names.count("canceled") == 1
    good = run_recognizer("speech", speech_config(server.ws, key), parts[0].pcm16())
    assert wer(parts[0].text, good.transcript) <= 0.35, good.events
    # a single-use streamscribe token, as SpeechConfig(auth_token=...) sends it (Bearer)
    token = httpx.get(
        server.http + "/v3/token", params={"expires_in_seconds": 60}, headers={"Authorization": key}
    ).json()["token"]
    config = speechsdk.SpeechConfig(host=server.ws)
    config.authorization_token = token
    tokened = run_recognizer("speech", config, parts[0].pcm16())
    assert wer(parts[0].text, tokened.transcript) <= 0.35, tokened.events


def test_an_idle_socket_between_recognitions_is_closed_quietly(keyed, two_utterances, tmp_path):
    """The SDK keeps its socket open between `recognize_once` calls; the server closing it for
    idleness is no error to the application: the next call reconnects and goes on."""
    server, key, _ = keyed
    parts = speech_or_skip(2)
    path = wav_file(tmp_path / "two.wav", two_utterances.audio)
    recognizer = speechsdk.SpeechRecognizer(
        speech_config=speech_config(server.ws, key),
        audio_config=speechsdk.audio.AudioConfig(filename=str(path)),
    )
    canceled: list = []
    recognizer.canceled.connect(lambda evt: canceled.append(evt.cancellation_details))
    first = recognizer.recognize_once_async().get()
    time.sleep(7)  # past the idle timeout: the server closes the socket
    second = recognizer.recognize_once_async().get()
    assert not canceled, [(c.code, c.error_details) for c in canceled]
    assert wer(parts[0].text, first.text) <= 0.35, first.text
    assert wer(parts[1].text, second.text) <= 0.35, second.text


def active(server, key: str) -> int:
    metrics = httpx.get(server.http + "/v1/metrics", headers={"Authorization": key}, timeout=5)
    return metrics.json()["sessions_active"]


def test_server_refusals_are_canceled_without_reconnecting(keyed):
    server, key, single = keyed
    # the key's one stream is taken: the second is refused (TooManyRequests), at once
    stream, audio = push_stream()
    holder = speechsdk.transcription.ConversationTranscriber(
        speech_config=speech_config(server.ws, single), audio_config=audio
    )
    started = threading.Event()
    holder.session_started.connect(lambda _e: started.set())
    holder.start_transcribing_async().get()
    assert started.wait(10)
    deadline = time.monotonic() + 20
    while active(server, key) < 1:  # the holder's session is on the server
        assert time.monotonic() < deadline, "the first session never started"
        stream.write(b"\0" * 3200)
        time.sleep(0.1)
    refused = run_recognizer("speech", speech_config(server.ws, single), b"\0" * 6400, timeout=20)
    cancel = refused.canceled
    assert cancel is not None and cancel.code == "TooManyRequests", refused.events
    assert "Too many concurrent sessions" in cancel.details
    stream.close()
    holder.stop_transcribing_async().get()
    # no multilingual model served: German is refused with the fix, not transcribed as English
    config = speech_config(server.ws, key)
    config.speech_recognition_language = "de-DE"
    german = run_recognizer("speech", config, b"\0" * 6400, timeout=20)
    cancel = german.canceled
    assert cancel is not None and cancel.code == "BadRequest", german.events
    assert "--model base" in cancel.details, cancel.details
    for run in (refused, german):  # one cancel each, then the end: no reconnect loop
        assert run.names.count("canceled") == 1 and run.names[-1] == "session_stopped", run.names
        assert run.stop_seconds < 5


def test_conversation_transcriber_without_the_speakers_extra_names_it(tmp_path_factory):
    """Speaker ids need the `speakers` extra: without it a ConversationTranscriber is canceled
    with the fix (never transcribed without the speaker ids it asks for), and a
    SpeechRecognizer on the same server still works."""
    hide = Path(__file__).parent / "without_speakers"
    path = os.pathsep.join(p for p in (str(hide), os.environ.get("PYTHONPATH")) if p)
    server = start_server(Path(tmp_path_factory.mktemp("azure-bare")), env={"PYTHONPATH": path})
    try:
        part = speech_or_skip(1)[0]
        refused = run_recognizer("conversation", speech_config(server.ws), b"\0" * 6400)
        cancel = refused.canceled
        assert cancel is not None and cancel.code == "BadRequest", refused.events
        assert "streamscribe[speakers]" in cancel.details, cancel.details
        assert refused.names.count("canceled") == 1 and refused.stop_seconds < 5
        served = run_recognizer("speech", speech_config(server.ws), part.pcm16())
        assert wer(part.text, served.transcript) <= 0.35, served.events
    finally:
        server.process.terminate()
        server.process.wait(30)
