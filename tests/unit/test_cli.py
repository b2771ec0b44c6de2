"""The command line: help texts, option wiring, exit codes, and the live view over a stub server.

The server and the offline engine are replaced by stand-in modules where a command would start
them, so these tests check the CLI's own work: which Settings it builds, what it writes where,
and how it reports failures.
"""

from __future__ import annotations

import asyncio
import importlib.abc
import json
import re
import sys
import threading
import types
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner
from websockets.asyncio.server import ServerConnection, serve

from streamscribe.cli import app
from streamscribe.events import TurnUpdate, Word

runner = CliRunner()
ENV = {"COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"}
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def invoke(*args: str) -> Any:
    result = runner.invoke(app, list(args), env=ENV)
    result.plain = ANSI.sub("", result.output)  # type: ignore[attr-defined]
    return result


COMMAND_OPTIONS = {
    "serve": [
        "--host",
        "--port",
        "--model",
        "--device",
        "--compute-type",
        "--data-dir",
        "--log-level",
        "--backend",
        "--cpu-threads",
        "--max-sessions",
        "--max-batch-size",
        "--database-url",
        "--admin-key",
        "--retention-days",
        "--insecure-no-auth",
        "--decoder",
        "--ray-address",
        "--ray-app-name",
    ],
    "mic": [
        "--url",
        "--api-key",
        "--device",
        "--save",
        "--format-turns",
        "--no-format-turns",
        "--min-turn-silence",
        "--max-turn-silence",
        "--keyterm",
    ],
    "stream": [
        "--realtime",
        "--fast",
        "--url",
        "--api-key",
        "--save",
        "--format-turns",
        "--min-turn-silence",
        "--max-turn-silence",
        "--keyterm",
    ],
    "transcribe": ["--format", "--output", "--model", "--device", "--compute-type"],
    "models": ["--data-dir"],
}


def test_top_level_help_lists_commands() -> None:
    result = invoke("--help")
    assert result.exit_code == 0
    for command in COMMAND_OPTIONS:
        assert command in result.plain


@pytest.mark.parametrize(("command", "options"), COMMAND_OPTIONS.items())
def test_command_help_mentions_options(command: str, options: list[str]) -> None:
    result = invoke(command, "--help")
    assert result.exit_code == 0, result.output
    for option in options:
        assert option in result.plain, f"{command} --help lacks {option}"


def test_version() -> None:
    result = invoke("--version")
    assert result.exit_code == 0 and result.plain.startswith("streamscribe ")


def test_models_lists_tiny_en_as_installed() -> None:
    result = invoke("models")
    assert result.exit_code == 0, result.output
    row = next(line for line in result.plain.splitlines() if "tiny.en" in line)
    assert "yes" in row


# ------------------------------------------------------------------ serve


@pytest.fixture
def fake_server(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    calls: list[Any] = []
    module = types.ModuleType("streamscribe.server.app")
    module.run = calls.append  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "streamscribe.server.app", module)
    return calls


def test_serve_overrides_only_the_flags_given(
    fake_server: list[Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("STREAMSCRIBE_HOST", "0.0.0.0")
    result = invoke("serve", "--port", "9001", "--model", "base", "--data-dir", str(tmp_path))
    assert result.exit_code == 0, result.output
    (settings,) = fake_server
    assert (settings.port, settings.model, settings.data_dir) == (9001, "base", tmp_path)
    assert settings.host == "0.0.0.0"  # from the environment: no --host given
    assert settings.compute_type == "int8"  # default kept


def test_serve_rejects_a_bad_port(fake_server: list[Any]) -> None:
    result = invoke("serve", "--port", "eighty")
    assert result.exit_code == 2 and not fake_server


def test_serve_flag_beats_environment_beats_default(
    fake_server: list[Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert invoke("serve", "--data-dir", str(tmp_path)).exit_code == 0
    monkeypatch.setenv("STREAMSCRIBE_PORT", "8123")
    assert invoke("serve", "--data-dir", str(tmp_path)).exit_code == 0
    assert invoke("serve", "--data-dir", str(tmp_path), "--port", "9001").exit_code == 0
    assert [settings.port for settings in fake_server] == [8000, 8123, 9001]


def test_serve_rejects_a_bad_environment_value(
    fake_server: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STREAMSCRIBE_PORT", "eighty")
    result = invoke("serve")
    assert result.exit_code == 2 and not fake_server
    assert "invalid setting" in result.plain and "port" in result.plain


def test_every_setting_has_a_description() -> None:
    from streamscribe.config import Settings

    assert [name for name, f in Settings.model_fields.items() if not f.description] == []


def test_serve_flags_are_the_settings_fields_not_marked_env_only() -> None:
    from streamscribe.cli.serve import flag_name
    from streamscribe.config import Settings

    shown = invoke("serve", "--help").plain
    for name, field in Settings.model_fields.items():
        flag = flag_name(name, field)
        if flag is None:
            assert "--" + name.replace("_", "-") not in shown, f"{name} is environment-only"
        else:
            assert flag in shown and f"$STREAMSCRIBE_{name.upper()}" in shown


def test_a_new_setting_is_a_serve_flag_with_nothing_else_to_change(
    fake_server: list[Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from pydantic import Field

    from streamscribe import config

    class Extended(config.Settings):
        ssl_certfile: Path | None = Field(default=None, description="PEM certificate chain.")
        tls: str | None = Field(
            default=None, description="self-signed: make a certificate.", json_schema_extra={}
        )
        renamed_thing: int = Field(
            default=3, description="Spelled otherwise.", json_schema_extra={"flag": "--other"}
        )
        hidden_thing: int = Field(
            default=4, description="No flag.", json_schema_extra=config.ENV_ONLY
        )

    monkeypatch.setattr(config, "Settings", Extended)
    shown = invoke("serve", "--help").plain
    assert "--ssl-certfile" in shown and "PEM certificate chain." in shown and "--tls" in shown
    assert "--other" in shown and "--renamed-thing" not in shown and "--hidden-thing" not in shown
    monkeypatch.setenv("STREAMSCRIBE_TLS", "self-signed")
    args = ["--data-dir", str(tmp_path), "--ssl-certfile", "c.pem", "--other", "5"]
    assert invoke("serve", *args).exit_code == 0
    (settings,) = fake_server
    assert (settings.ssl_certfile, settings.tls, settings.renamed_thing) == (
        Path("c.pem"),
        "self-signed",
        5,
    )


def test_the_command_line_starts_without_settings_or_the_model_stack() -> None:
    import subprocess

    probe = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from streamscribe.cli import app\n"
        "for args in (['--help'], ['keys', '--help'], ['mic', '--help']):\n"
        "    assert CliRunner().invoke(app, args).exit_code == 0, args\n"
        "heavy = {'pydantic_settings', 'streamscribe.config', 'streamscribe.engine',\n"
        "         'ctranslate2', 'faster_whisper', 'torch', 'sqlalchemy'}\n"
        "print(sorted(heavy & set(sys.modules)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "[]", done.stdout + done.stderr


# ------------------------------------------------------------------ transcribe


@pytest.fixture
def tone(tmp_path: Path) -> Path:
    rate = 16000
    samples = (np.sin(np.arange(rate) * 2 * np.pi * 440 / rate) * 8000).astype("<i2")
    path = tmp_path / "tone.wav"
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(samples.tobytes())
    return path


TURNS = [
    TurnUpdate(0, 0, (Word("Hello", 0, 400, 0.9, True), Word("there.", 450, 900, 0.9, True)), True),
    TurnUpdate(0, 1, (Word("Bye.", 1500, 1900, 0.9, True),), True, speaker="B"),
]


@pytest.fixture
def fake_offline(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    calls: list[Any] = []

    def transcribe_file(
        path: Path, settings: Any, on_progress: Any = None, loader: Any = None
    ) -> list[TurnUpdate]:
        calls.append((path, settings))
        if on_progress is not None:
            on_progress(0.5, 1.0)
            on_progress(1.0, 1.0)
        return TURNS

    module = types.ModuleType("streamscribe.engine.offline")
    module.transcribe_file = transcribe_file  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "streamscribe.engine.offline", module)
    return calls


def test_transcribe_srt_to_stdout(fake_offline: list[Any], tone: Path) -> None:
    result = invoke("transcribe", str(tone), "-f", "srt", "--model", "base")
    assert result.exit_code == 0, result.output
    assert result.stdout == (
        "1\n00:00:00,000 --> 00:00:00,900\nHello there.\n\n"
        "2\n00:00:01,500 --> 00:00:01,900\nSpeaker B: Bye.\n"
    )
    (path, settings), *_ = fake_offline
    assert path == tone and settings.model == "base"


def test_transcribe_format_from_output_suffix(
    fake_offline: list[Any], tone: Path, tmp_path: Path
) -> None:
    out = tmp_path / "sub" / "talk.json"
    result = invoke("transcribe", str(tone), "-o", str(out))
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["text"] == "Hello there. Bye."
    assert result.stdout == ""


def test_transcribe_undecodable_file_exits_2(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from streamscribe.errors import AudioDecodeError

    def transcribe_file(
        path: Path, settings: Any, on_progress: Any = None, loader: Any = None
    ) -> list[TurnUpdate]:
        raise AudioDecodeError("no audio stream found")

    module = types.ModuleType("streamscribe.engine.offline")
    module.transcribe_file = transcribe_file  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "streamscribe.engine.offline", module)
    junk = tmp_path / "notes.txt"
    junk.write_text("not audio")
    result = invoke("transcribe", str(junk))
    assert result.exit_code == 2
    assert "cannot decode" in result.plain and "no audio stream found" in result.plain


def test_transcribe_missing_file_exits_2(tmp_path: Path) -> None:
    result = invoke("transcribe", str(tmp_path / "absent.wav"))
    assert result.exit_code == 2


# ------------------------------------------------------------------ mic and stream


class _NoSounddevice(importlib.abc.MetaPathFinder):
    def find_spec(self, name: str, path: Any, target: Any = None) -> None:
        if name == "sounddevice":
            raise OSError("PortAudio library not found")
        return None


def test_mic_without_portaudio_names_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "sounddevice", raising=False)
    monkeypatch.setattr(sys, "meta_path", [_NoSounddevice(), *sys.meta_path])
    result = invoke("mic")
    assert result.exit_code == 2
    assert "apt-get install libportaudio2" in result.plain


def test_stream_without_server_says_so(tone: Path) -> None:
    result = invoke("stream", str(tone), "--url", "ws://127.0.0.1:9", "--fast")
    assert result.exit_code == 1
    assert "ws://127.0.0.1:9" in result.plain and "streamscribe serve" in result.plain


@pytest.fixture
def v3_stub() -> Iterator[tuple[str, list[str]]]:
    """A minimal v3 server: one partial per audio frame, a formatted final turn on Terminate."""
    paths: list[str] = []
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    port: list[int] = []
    stop: list[asyncio.Future[None]] = []

    async def handle(ws: ServerConnection) -> None:
        paths.append(ws.request.path)
        await ws.send(json.dumps({"type": "Begin", "id": "s1", "expires_at": 1759796682}))
        received = 0
        async for frame in ws:
            if isinstance(frame, bytes):
                received += len(frame)
                continue
            if json.loads(frame)["type"] == "Terminate":
                words = [{"start": 0, "end": 400, "text": "Hi.", "confidence": 1.0}]
                for formatted in (False, True):
                    turn = {
                        "type": "Turn",
                        "turn_order": 0,
                        "turn_is_formatted": formatted,
                        "end_of_turn": True,
                        "transcript": "Hi." if formatted else "hi",
                        "end_of_turn_confidence": 1.0,
                        "words": [dict(words[0], word_is_final=True)],
                    }
                    await ws.send(json.dumps(turn))
                await ws.send(
                    json.dumps(
                        {
                            "type": "Termination",
                            "audio_duration_seconds": received // 32000,
                            "session_duration_seconds": 1,
                        }
                    )
                )
                await ws.close()

    async def main() -> None:
        stop.append(loop.create_future())
        async with serve(handle, "127.0.0.1", 0) as server:
            port.append(server.sockets[0].getsockname()[1])
            ready.set()
            await stop[0]

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    ready.wait(5)
    yield f"ws://127.0.0.1:{port[0]}", paths
    loop.call_soon_threadsafe(stop[0].set_result, None)
    thread.join(5)


def test_stream_shows_turns_and_duration(
    v3_stub: tuple[str, list[str]], tone: Path, tmp_path: Path
) -> None:
    url, paths = v3_stub
    saved = tmp_path / "copy.wav"
    result = invoke(
        "stream",
        str(tone),
        "--url",
        url,
        "--fast",
        "--save",
        str(saved),
        "--keyterm",
        "Kubernetes",
        "--max-turn-silence",
        "900",
    )
    assert result.exit_code == 0, result.output
    assert "Hi." in result.plain
    assert "1 s of audio" in result.plain
    assert paths[0] == (
        "/v3/ws?sample_rate=16000&format_turns=true&max_turn_silence=900"
        "&keyterms_prompt=%5B%22Kubernetes%22%5D"
    )
    with wave.open(str(saved)) as wav:
        assert wav.getnframes() == 16000


def test_transcript_view_prints_formatted_turns_once() -> None:
    from rich.console import Console

    from streamscribe.client import Turn, TurnWord
    from streamscribe.client.console import TranscriptView, render_turn

    console = Console(record=True, width=80, color_system=None)
    view = TranscriptView(console, format_turns=True)

    def turn(order: int, text: str, end: bool, formatted: bool = False, **kw: Any) -> Turn:
        words = tuple(
            TurnWord(t, i * 100, i * 100 + 80, 0.9, end or i == 0)
            for i, t in enumerate(text.split())
        )
        final = " ".join(w.text for w in words if w.word_is_final)
        return Turn(order, final, end, formatted, 0.5, words, **kw)

    view.update(turn(0, "hello wor", end=False))
    assert render_turn(view._current).plain == "hello wor"  # type: ignore[arg-type]
    assert [s.style for s in render_turn(view._current).spans] == ["bold", "dim"]  # type: ignore[arg-type]
    view.update(turn(0, "hello world", end=True))  # waits for the formatted re-send
    assert console.export_text() == ""
    view.update(turn(0, "Hello, world!", end=True, formatted=True))
    view.update(turn(1, "and more", end=True, speaker_label="B"))  # never formatted
    view.update(turn(2, "still going", end=False))  # a newer turn flushes turn 1
    view.update(turn(0, "late duplicate", end=True, formatted=True))
    view.finish()
    assert console.export_text() == "Hello, world!\nSpeaker B: and more\nstill\n"
