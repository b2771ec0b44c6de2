"""Offline file transcription with the real model: the engine call and the CLI command."""

from __future__ import annotations

import json

from speech import joined, speech_or_skip, wer
from typer.testing import CliRunner

from streamscribe.audio.wav import WavWriter
from streamscribe.cli import app
from streamscribe.config import Settings
from streamscribe.engine.offline import transcribe_file


def test_transcribe_file_matches_reference_with_progress(tmp_path):
    speech = joined(speech_or_skip(3), gap_s=1.0)
    path = tmp_path / "speech.wav"
    with WavWriter(path) as w:
        w.write(speech.audio)
    progress: list[tuple[float, float]] = []
    turns = transcribe_file(
        path, Settings(data_dir=tmp_path), on_progress=lambda d, t: progress.append((d, t))
    )
    text = " ".join(t.text for t in turns)
    assert wer(speech.text, text) <= 0.3, text
    assert progress[-1][0] == progress[-1][1] and abs(progress[-1][1] - speech.seconds) < 0.1
    assert [d for d, _ in progress] == sorted(d for d, _ in progress)
    starts = [t.start_ms for t in turns]
    assert starts == sorted(starts) and turns[-1].end_ms <= speech.seconds * 1000 + 100


def test_cli_transcribe_writes_srt_and_json(tmp_path):
    speech = speech_or_skip(1)[0]
    path = tmp_path / "one.wav"
    with WavWriter(path) as w:
        w.write(speech.audio)
    runner = CliRunner()
    out = tmp_path / "one.srt"
    result = runner.invoke(app, ["transcribe", str(path), "-f", "srt", "-o", str(out)])
    assert result.exit_code == 0, result.output
    srt = out.read_text()
    assert srt.startswith("1\n00:00:") and "-->" in srt
    result = runner.invoke(app, ["transcribe", str(path), "-f", "json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    text = " ".join(t["text"] for t in (data["turns"] if isinstance(data, dict) else data))
    assert wer(speech.text, text) <= 0.3


def test_cli_transcribe_rejects_a_non_audio_file(tmp_path):
    bogus = tmp_path / "notes.txt"
    bogus.write_text("not audio at all\n" * 50)
    result = CliRunner().invoke(app, ["transcribe", str(bogus)])
    assert result.exit_code == 2
    assert "notes.txt" in result.output
