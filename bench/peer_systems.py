"""The three servers that peers_bench.py compares: how each is installed, started and spoken to.

Why this exists: a user choosing a self-hosted real-time Whisper server will look at WhisperLive
and WhisperLiveKit beside streamscribe. A fair comparison runs all three on the same machine, the
same tiny.en CTranslate2 files and the same audio, each through its own WebSocket protocol, and
reads every reply the same way: text that can no longer change ("final") and text that still may
("partial"). This module holds what differs per system (its virtualenv, command line, readiness
probe and wire protocol); the runs and the figures are in peers_bench.py.

Each peer lives in its own virtualenv under bench/.peers/ (ignored by git), created on first use:
the peer itself at a pinned version with `--no-deps`, then only what its server path imports
(each declares far more: CUDA wheels, OpenVINO, PyAudio, ...), with torch pinned to the CPU build
this machine has on disk and CTranslate2 pinned to the version streamscribe runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import psutil
from bench_server import ServerProcess, free_port
from bench_session import CHUNK_BYTES, CHUNK_S, WRITE_LIMIT, send_paced, shrink_send_buffer
from stream_bench import QUERY
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, WebSocketException

REPO = Path(__file__).resolve().parent.parent
PEERS_DIR = REPO / "bench" / ".peers"
OPEN_TIMEOUT_S = 30.0  # WhisperLive loads the model when the first client connects
END_TIMEOUT_S = 60.0  # from the end-of-stream message to the server's last word


# ---------------------------------------------------------------------------------- install
@dataclass(frozen=True)
class PeerInstall:
    folder: str  # under bench/.peers/
    package: str  # the peer, pinned, installed with --no-deps
    deps: tuple[str, ...]  # what its server imports
    left_out: str  # declared dependencies not installed, and why


WHISPERLIVE_INSTALL = PeerInstall(
    "whisperlive",
    "whisper-live==0.10.0",
    (
        "faster-whisper==1.2.0",  # whisper-live's own pin
        "ctranslate2==4.8.5",
        "torch==2.13.0",
        "onnxruntime",
        "websockets",
        "fastapi",
        "uvicorn",
        "python-multipart",
        "prometheus-client",
        "requests",  # faster-whisper 1.2.0 imports it without declaring it
    ),
    "PyAudio, av, openai-whisper, openvino*, optimum*, nvidia-cublas/cudnn-cu12, librosa, numba, "
    "scipy, kaldialign, soundfile, websocket-client, torchaudio: the microphone client, the "
    "TensorRT/OpenVINO backends and CUDA; the faster_whisper server path imports none of them",
)
WHISPERLIVEKIT_INSTALL = PeerInstall(
    "whisperlivekit",
    "whisperlivekit==0.2.26",
    (
        "faster-whisper==1.2.1",  # the version streamscribe runs
        "ctranslate2==4.8.5",
        "torch==2.13.0",
        "onnxruntime",  # VAC: one shared Silero session instead of a JIT model per session
        "fastapi>=0.141.1",
        "starlette>=1.3.1",
        "uvicorn",
        "websockets",
        "huggingface-hub>=0.25.0",
        "tqdm",
        "tiktoken",
        "python-multipart>=0.0.31",
        "soundfile",
        "librosa",
    ),
    "torchaudio: only the `wlk` CLI imports it, and no torchaudio release matches torch 2.13",
)


class InstallError(RuntimeError):
    pass


def venv_python(spec: PeerInstall) -> Path:
    return PEERS_DIR / spec.folder / "bin" / "python"


def _run_logged(cmd: list[str], log, label: str) -> None:
    """Run a command, keep all its output in the log, show progress lines on stderr."""
    log.write(f"$ {' '.join(cmd)}\n")
    log.flush()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    tail: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        log.write(line)
        tail = [*tail[-15:], line.rstrip()]
        if line.startswith(("Collecting", "Installing", "Successfully", "ERROR")):
            print(f"  [{label}] {line.rstrip()[:150]}", file=sys.stderr, flush=True)
    if proc.wait() != 0:
        raise InstallError(f"{cmd[2:5]} exited with {proc.returncode}: " + " | ".join(tail[-4:]))


def ensure_venv(spec: PeerInstall) -> Path:
    """The peer's virtualenv python, created and filled first if absent or out of date."""
    venv = PEERS_DIR / spec.folder
    python = venv_python(spec)
    stamp = venv / ".installed"
    wanted = json.dumps([spec.package, *spec.deps])
    if python.exists() and stamp.is_file() and stamp.read_text() == wanted:
        return python
    venv.mkdir(parents=True, exist_ok=True)
    print(f"installing {spec.package} into {venv} (log {venv / 'install.log'})", file=sys.stderr)
    t0 = time.monotonic()
    with (venv / "install.log").open("a") as log:
        if not python.exists():
            _run_logged([sys.executable, "-m", "venv", str(venv)], log, spec.folder)
        pip = [str(python), "-m", "pip", "install", "--progress-bar", "off"]
        _run_logged([*pip, "--no-deps", spec.package], log, spec.folder)
        _run_logged([*pip, *spec.deps], log, spec.folder)
    stamp.write_text(wanted)
    print(f"  [{spec.folder}] ready in {time.monotonic() - t0:.0f} s", file=sys.stderr)
    return python


def package_versions(python: Path | str, names: tuple[str, ...]) -> dict[str, str | None]:
    code = (
        "import json, sys, importlib.metadata as m\n"
        "def v(n):\n"
        "    try: return m.version(n)\n"
        "    except m.PackageNotFoundError: return None\n"
        "print(json.dumps({n: v(n) for n in sys.argv[1:]}))"
    )
    try:
        out = subprocess.run(
            [str(python), "-c", code, *names], capture_output=True, text=True, timeout=60
        )
        return json.loads(out.stdout)
    except (OSError, ValueError, subprocess.SubprocessError):
        return {}


# ---------------------------------------------------------------------------------- what we see
@dataclass
class TextTracker:
    """The text a client shows, as it changes: (monotonic time, final text, partial text).

    Only changes are kept (the raw strings; normalising waits until the run is over, so the
    clients spend as little of the shared CPU as possible while servers are measured)."""

    final: str = ""
    partial: str = ""
    changes: list[tuple[float, str, str]] = field(default_factory=list)
    error: str | None = None
    done: bool = False  # the server said it has nothing more to send

    def update(self, t: float, final: str, partial: str) -> None:
        if final != self.final or partial != self.partial:
            self.final, self.partial = final, partial
            self.changes.append((t, final, partial))

    @property
    def pending(self) -> bool:
        return bool(self.partial.strip())


class SessionRefused(RuntimeError):
    pass


def _json(raw: str | bytes) -> dict:
    msg = json.loads(raw)
    if not isinstance(msg, dict):
        raise ValueError(f"not a JSON object: {str(raw)[:80]}")
    return msg


class StreamscribeSession:
    """AssemblyAI v3 (`/v3/ws`), as stream_bench speaks it: final = words marked final."""

    end_message: str | bytes = json.dumps({"type": "Terminate"})

    def __init__(self, port: int) -> None:
        self.url = f"ws://127.0.0.1:{port}/v3/ws?{QUERY}"
        self.tracker = TextTracker()
        self._turns: dict[int, tuple[str, str]] = {}  # turn_order -> (final, partial)

    async def open(self, ws: ClientConnection) -> None:
        msg = _json(await ws.recv())
        if msg.get("type") != "Begin":
            raise SessionRefused(f"first message {json.dumps(msg)[:160]}")

    def encode(self, chunk: bytes) -> bytes:
        return chunk

    def feed(self, t: float, raw: str | bytes) -> None:
        msg = _json(raw)
        kind = msg.get("type")
        if kind == "Turn":
            words = msg.get("words") or []
            partial = " ".join(w["text"] for w in words if not w.get("word_is_final"))
            self._turns[msg["turn_order"]] = (msg.get("transcript", ""), partial)
            ordered = [self._turns[k] for k in sorted(self._turns)]
            self.tracker.update(t, _join(f for f, _ in ordered), _join(p for _, p in ordered))
        elif kind == "Termination":
            self.tracker.done = True
        elif kind == "Error":
            self.tracker.error = f"Error message: {json.dumps(msg)[:200]}"


class WhisperLiveSession:
    """WhisperLive: a JSON options message, float32 PCM frames, b"END_OF_AUDIO".

    The options are those of WhisperLive's own `Client` (VAD on, 10 repeats to complete a
    segment). Final = segments marked `completed`, kept as its client keeps them (a completed
    segment is taken when it starts at or after the end of the last one); partial = the last,
    incomplete segment of the latest message."""

    end_message: str | bytes = b"END_OF_AUDIO"

    def __init__(self, port: int) -> None:
        self.url = f"ws://127.0.0.1:{port}"
        self.tracker = TextTracker()
        self.uid = os.urandom(8).hex()
        self._done: list[dict] = []

    async def open(self, ws: ClientConnection) -> None:
        options = {
            "uid": self.uid,
            "language": "en",
            "task": "transcribe",
            "model": "tiny.en",  # replaced by the server's custom model path
            "use_vad": True,
            "send_last_n_segments": 10,
            "no_speech_thresh": 0.45,
            "clip_audio": False,
            "same_output_threshold": 10,
            "enable_translation": False,
            "word_timestamps": False,
        }
        await ws.send(json.dumps(options))
        while True:
            msg = _json(await ws.recv())
            if msg.get("message") == "SERVER_READY":
                return
            if "status" in msg:
                raise SessionRefused(f"{msg['status']}: {msg.get('message')}")

    def encode(self, chunk: bytes) -> bytes:
        return (np.frombuffer(chunk, dtype="<i2").astype(np.float32) / 32768.0).tobytes()

    def feed(self, t: float, raw: str | bytes) -> None:
        msg = _json(raw)
        if msg.get("status") == "ERROR" or msg.get("message") == "DISCONNECT":
            self.tracker.error = f"server said {json.dumps(msg)[:200]}"
            return
        segments = msg.get("segments")
        if not segments:
            return
        for seg in segments:
            if seg.get("completed") and (
                not self._done or float(seg["start"]) >= float(self._done[-1]["end"])
            ):
                self._done.append(seg)
        last = segments[-1]
        partial = "" if last.get("completed") else last.get("text", "")
        self.tracker.update(t, _join(s["text"] for s in self._done), partial)


class WhisperLiveKitSession:
    """WhisperLiveKit `/asr` with `--pcm-input`: s16le frames, an empty frame ends the stream.

    Every message carries the whole transcript: `lines` (committed by LocalAgreement: final) and
    `buffer_transcription` (not yet committed: partial). After the empty frame the server
    flushes, sends {"type": "ready_to_stop"} and waits for the client to close."""

    end_message: str | bytes = b""

    def __init__(self, port: int) -> None:
        self.url = f"ws://127.0.0.1:{port}/asr?language=en"
        self.tracker = TextTracker()

    async def open(self, ws: ClientConnection) -> None:
        msg = _json(await ws.recv())
        if msg.get("type") != "config":
            raise SessionRefused(f"first message {json.dumps(msg)[:160]}")

    def encode(self, chunk: bytes) -> bytes:
        return chunk

    def feed(self, t: float, raw: str | bytes) -> None:
        msg = _json(raw)
        if msg.get("type") == "ready_to_stop":
            self.tracker.done = True
            return
        if msg.get("error") or msg.get("type") == "error":
            self.tracker.error = f"server said {json.dumps(msg)[:200]}"
            return
        if "lines" in msg:
            final = _join(line.get("text", "") for line in msg["lines"])
            self.tracker.update(t, final, msg.get("buffer_transcription", "") or "")


def _join(parts) -> str:
    return " ".join(p.strip() for p in parts if p and p.strip())


# ---------------------------------------------------------------------------------- one session
@dataclass
class SessionResult:
    tracker: TextTracker
    t_audio0: float | None = None  # wall (monotonic) time of audio time 0
    end_sent_at: float | None = None
    tail_s: float = 0.0  # silence streamed after the file
    connect_ms: float | None = None
    max_send_late_s: float = 0.0
    audio_s: float = 0.0  # unused (send_paced counts s16 bytes; WhisperLive's are float32)
    error: str | None = None


async def _read(ws: ClientConnection, session) -> None:
    async for raw in ws:
        session.feed(time.monotonic(), raw)
        if session.tracker.done and isinstance(session, WhisperLiveKitSession):
            return  # it waits for us to close


async def run_session(
    session,
    pcm: bytes,
    tail_min_s: float,
    tail_max_s: float,
    phase_s: float = 0.0,
    quiet_s: float = 2.0,
) -> SessionResult:
    """Stream pcm (s16le) in real time, then silence (as a live microphone would) for at least
    tail_min_s, until no text is pending or the shown text has not changed for quiet_s, at most
    tail_max_s; then the end-of-stream message, and read until the server is done. Never raises
    for a server failure: the result carries it."""
    result = SessionResult(session.tracker)
    pcm += bytes(-len(pcm) % CHUNK_BYTES)
    n_file = len(pcm) // CHUNK_BYTES
    zero = session.encode(bytes(CHUNK_BYTES))

    def chunks() -> Iterator[bytes]:
        for k in range(n_file):
            yield session.encode(pcm[k * CHUNK_BYTES : (k + 1) * CHUNK_BYTES])
        tracker = session.tracker
        for k in range(int(round(tail_max_s / CHUNK_S))):
            if k * CHUNK_S >= tail_min_s:
                last_change = tracker.changes[-1][0] if tracker.changes else 0.0
                if not tracker.pending or time.monotonic() - last_change >= quiet_s:
                    return
            result.tail_s = (k + 1) * CHUNK_S
            yield zero

    reader: asyncio.Task | None = None
    t_open = time.monotonic()
    try:
        async with connect(
            session.url, max_size=None, write_limit=WRITE_LIMIT, open_timeout=OPEN_TIMEOUT_S
        ) as ws:
            shrink_send_buffer(ws)
            await asyncio.wait_for(session.open(ws), OPEN_TIMEOUT_S)
            result.connect_ms = (time.monotonic() - t_open) * 1000
            t_send0 = time.monotonic() + phase_s
            result.t_audio0 = t_send0 - CHUNK_S
            reader = asyncio.create_task(_read(ws, session))
            await send_paced(ws, chunks(), t_send0, result)
            result.end_sent_at = time.monotonic()
            await ws.send(session.end_message)
            await asyncio.wait_for(reader, END_TIMEOUT_S)
    except SessionRefused as exc:
        result.error = f"refused: {exc}"
    except ConnectionClosed as exc:
        result.error = f"connection closed early: {exc}"
    except TimeoutError:
        result.error = "timed out waiting for the server"
    except (WebSocketException, OSError, ValueError, KeyError, TypeError) as exc:
        result.error = f"{type(exc).__name__}: {exc}"
    finally:
        if reader is not None:
            if not reader.done():
                reader.cancel()
            with contextlib.suppress(BaseException):
                await reader
    if result.error is None and session.tracker.error:
        result.error = session.tracker.error
    return result


# ---------------------------------------------------------------------------------- servers
class PeerProcess(ServerProcess):
    """A server started by an arbitrary command line; ready when `probe(port)` says so."""

    def __init__(
        self,
        cmd: list[str],
        log_path: Path,
        port: int,
        probe: Callable[[int], bool],
        env: dict[str, str] | None = None,
    ) -> None:
        super().__init__(log_path.parent, log_path, port, env)
        self.cmd = cmd
        self.probe = probe

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                self.cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(self.env or {})},
            )

    def wait_ready(self, timeout_s: float = 180.0) -> float:
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout_s:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"exited with {self.proc.returncode} before it was ready")
            if self.probe(self.port):
                return time.monotonic() - t0
            time.sleep(0.3)
        raise RuntimeError(f"not ready after {timeout_s:.0f} s")

    def stop(self) -> None:
        """As ServerProcess, then any child process it left behind."""
        children = []
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(psutil.Error):
                children = psutil.Process(self.proc.pid).children(recursive=True)
        super().stop()
        for child in children:
            with contextlib.suppress(psutil.Error):
                child.kill()


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _wlk_ready(port: int) -> bool:
    with contextlib.suppress(httpx.HTTPError, ValueError):
        r = httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)
        return r.status_code == 200 and r.json().get("ready") is True
    return False


# ---------------------------------------------------------------------------------- systems
@dataclass(frozen=True)
class System:
    name: str
    install: PeerInstall | None
    session: type
    how: str  # one line: how it is configured, for the report


WHISPERLIVE_LAUNCH = """\
import os, sys
os.environ.setdefault("OMP_NUM_THREADS", "1")  # as WhisperLive's run_server.py
from whisper_live.server import TranscriptionServer
port, model, clients = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
TranscriptionServer().run("127.0.0.1", port=port, backend="faster_whisper",
    faster_whisper_custom_model_path=model, single_model=True,
    max_clients=clients, max_connection_time=3600)
"""

SYSTEMS = {
    "streamscribe": System(
        "streamscribe",
        None,
        StreamscribeSession,
        "python -m streamscribe serve (defaults: tiny.en int8 CTranslate2), /v3/ws pcm_s16le",
    ),
    "whisperlive": System(
        "whisperlive",
        WHISPERLIVE_INSTALL,
        WhisperLiveSession,
        "TranscriptionServer.run(backend=faster_whisper, faster_whisper_custom_model_path=DIR, "
        "single_model=True, OMP_NUM_THREADS=1) as run_server.py; client options as its Client "
        "(language en, use_vad, same_output_threshold 10), float32 frames",
    ),
    "whisperlivekit": System(
        "whisperlivekit",
        WHISPERLIVEKIT_INSTALL,
        WhisperLiveKitSession,
        "whisperlivekit-server --backend-policy localagreement --backend faster-whisper "
        "--model_dir DIR --lan en --pcm-input (VAC and VAD on, as default), /asr?language=en",
    ),
}


def start_server(
    system: System, model_dir: str, log_path: Path, data_dir: Path, max_streams: int, warmup: Path
) -> ServerProcess:
    """The system's server on a free loopback port, started (not yet ready)."""
    port = free_port()
    if system.install is None:
        server = ServerProcess(data_dir, log_path, port)
        server.start()
        return server
    python = str(venv_python(system.install))
    home = PEERS_DIR / system.install.folder / "home"
    home.mkdir(parents=True, exist_ok=True)
    # no hub downloads: every model file is local (a download attempt fails loudly instead)
    env = {"HF_HUB_OFFLINE": "1", "HOME": str(home), "PYTHONUNBUFFERED": "1"}
    if system.name == "whisperlive":
        cmd = [python, "-c", WHISPERLIVE_LAUNCH, str(port), model_dir, str(max_streams + 1)]
        probe = _port_open
    else:
        cmd = [
            str(Path(python).parent / "whisperlivekit-server"),
            "--host", "127.0.0.1", "--port", str(port),
            "--backend-policy", "localagreement", "--backend", "faster-whisper",
            "--model_dir", model_dir, "--lan", "en", "--pcm-input",
            "--warmup-file", str(warmup), "--log-level", "INFO",
        ]  # fmt: skip
        probe = _wlk_ready
    server = PeerProcess(cmd, log_path, port, probe, env)
    server.start()
    return server


def failure_reason(server: ServerProcess | None, exc: BaseException) -> str:
    """One line: what went wrong, with the most telling line of the server's log."""
    reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if server is None:
        return reason
    lines = [ln.strip() for ln in server.log_tail(60).splitlines() if ln.strip()]
    raised = [ln for ln in lines if re.match(r"[\w.]*(Error|Exception)\b[^:]*:", ln)]
    marks = ("Error", "error", "ERROR", "No module")
    telling = raised or [
        ln for ln in lines if any(m in ln for m in marks) and not ln.startswith("Traceback")
    ]
    pick = telling[-1] if telling else (lines[-1] if lines else "")
    return f"{reason}; log: {pick[:200]}" if pick else reason
