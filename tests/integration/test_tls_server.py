"""A real server with `--tls self-signed` (and one with its own certificate files): https for the
REST endpoints and the page, wss for streams with the Python SDKs, `websockets` and
`streamscribe stream --ca-file`, and the refusals before anything starts."""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import subprocess
import sys
import threading
import wave
from pathlib import Path

import httpx
import pytest
from conftest import start_server, stop_server
from speech import joined, speech_or_skip, wer
from websockets.asyncio.client import connect
from websockets.asyncio.server import serve

from streamscribe.client import StreamingClient, StreamingError
from streamscribe.server import tls

CHUNK = 3200  # 100 ms of 16 kHz PCM16
MAX_WER = 0.35


@pytest.fixture(scope="module")
def speech():
    return joined(speech_or_skip(1), gap_s=1.2)


def frames(pcm: bytes):
    for i in range(0, len(pcm), CHUNK):
        yield pcm[i : i + CHUNK].ljust(CHUNK, b"\0")


def test_https_serves_info_and_the_page(tls_server):
    with httpx.Client(base_url=tls_server.http, verify=tls_server.verify, timeout=10) as http:
        info = http.get("/v1/info")
        assert info.status_code == 200 and info.json()["service"] == "streamscribe"
        page = http.get("/")
        assert page.status_code == 200 and "<html" in page.text.lower()
        # the page derives its socket's scheme from its own: https -> wss
        api = http.get("/web/api.js").text
        assert 'location.protocol === "https:" ? "wss:" : "ws:"' in api
    with pytest.raises(httpx.ConnectError, match="(?i)certificate"):
        httpx.get(tls_server.http + "/healthz", timeout=5)  # the system CAs do not know it


def test_the_server_says_how_to_trust_its_certificate(tls_server):
    log = tls_server.log.read_text()
    hints = [line for line in log.splitlines() if line.startswith("TLS: self-signed")]
    assert len(hints) == 1, log[-2000:]
    assert f"NODE_EXTRA_CA_CERTS={tls_server.ca.resolve()}" in hints[0]
    assert "serving https://" in log


def test_wss_v3_with_websockets_and_the_ca(tls_server, speech):
    async def session() -> tuple[list[dict], int | None]:
        context = ssl.create_default_context(cafile=str(tls_server.ca))
        url = tls_server.ws + "/v3/ws?sample_rate=16000&format_turns=true"
        messages = []
        async with connect(url, ssl=context) as ws:
            messages.append(json.loads(await ws.recv()))
            for frame in frames(speech.pcm16()):
                await ws.send(frame)
            await ws.send(json.dumps({"type": "Terminate"}))
            async for raw in ws:
                messages.append(json.loads(raw))
        return messages, ws.close_code

    messages, code = asyncio.run(session())
    assert messages[0]["type"] == "Begin" and messages[-1]["type"] == "Termination"
    assert code == 1000
    turns = [m for m in messages if m["type"] == "Turn" and m.get("turn_is_formatted")]
    assert wer(speech.text, " ".join(t["transcript"] for t in turns)) <= MAX_WER


def test_the_python_assemblyai_sdk_with_ssl_cert_file(tls_server, speech, monkeypatch):
    """What the trust hint says for Python: SSL_CERT_FILE, and the SDK is unchanged."""
    from assemblyai.streaming.v3 import StreamingClient as SdkClient
    from assemblyai.streaming.v3 import (
        StreamingClientOptions,
        StreamingEvents,
        StreamingParameters,
        TurnEvent,
    )

    monkeypatch.setenv("SSL_CERT_FILE", str(tls_server.ca))
    client = SdkClient(StreamingClientOptions(api_key="k", api_host=tls_server.ws))
    seen: list = []
    done = threading.Event()
    for kind in StreamingEvents:
        client.on(kind, lambda _c, e: seen.append(e))
    client.on(StreamingEvents.Termination, lambda _c, e: done.set())
    client.connect(StreamingParameters(sample_rate=16000, format_turns=True))
    client.stream(frames(speech.pcm16()))
    client.disconnect(terminate=True)
    assert done.wait(30), seen
    names = [type(e).__name__ for e in seen]
    assert names[0] == "BeginEvent" and names[-1] == "TerminationEvent", names
    assert "StreamingError" not in names, seen
    text = " ".join(e.transcript for e in seen if isinstance(e, TurnEvent) and e.turn_is_formatted)
    assert wer(speech.text, text) <= MAX_WER


def test_the_streamscribe_client_needs_the_ca_for_a_self_signed_server(tls_server, speech):
    with StreamingClient(tls_server.ws, ca_file=tls_server.ca, format_turns=True) as client:
        client.stream(frames(speech.pcm16()))
    assert client.termination is not None
    untrusted = StreamingClient(tls_server.ws)
    with pytest.raises(StreamingError, match="not trusted.*--ca-file"):
        untrusted.connect()
    plain = StreamingClient(tls_server.ws.replace("wss://", "ws://"))
    with pytest.raises(StreamingError, match="use wss://"):
        plain.connect()


def test_wss_to_a_plain_server_says_so():
    async def scenario() -> str:
        async with serve(lambda ws: ws.close(), "127.0.0.1", 0) as server:
            port = server.sockets[0].getsockname()[1]
            from streamscribe.client import AsyncStreamingClient

            client = AsyncStreamingClient(f"wss://127.0.0.1:{port}")
            try:
                await client.connect()
            except StreamingError as exc:
                return str(exc)
        return ""

    assert "ws://" in asyncio.run(scenario())


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "300", "NO_COLOR": "1", "TERM": "dumb"}
    return subprocess.run(
        [sys.executable, "-m", "streamscribe", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def test_stream_command_over_wss_with_ca_file(tls_server, speech, tmp_path):
    wav = tmp_path / "speech.wav"
    with wave.open(str(wav), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(speech.pcm16())
    url = ["--url", tls_server.ws]
    done = cli("stream", str(wav), "--fast", *url, "--ca-file", str(tls_server.ca))
    assert done.returncode == 0, done.stderr[-2000:]
    assert "done:" in done.stderr
    refused = cli("stream", str(wav), "--fast", *url)
    assert refused.returncode == 1
    assert "--ca-file" in refused.stderr


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (["--tls", "self-signed", "--ssl-certfile", "c.pem", "--ssl-keyfile", "k.pem"], "exclude"),
        (["--ssl-certfile", "cert.pem"], "--ssl-certfile needs --ssl-keyfile"),
    ],
)
def test_serve_refuses_a_tls_combination_before_starting(tmp_path, flags, says):
    done = cli("serve", "--data-dir", str(tmp_path), "--port", "1", *flags, timeout=60)
    assert done.returncode == 1
    assert says in done.stderr and "streamscribe:" in done.stderr, done.stderr[-1000:]


def test_serve_with_your_own_certificate(tmp_path_factory):
    data = tmp_path_factory.mktemp("own-cert")
    files = tls.self_signed(data / "certs")  # any CA-signed pair will do
    srv = start_server(
        data,
        "--ssl-certfile",
        str(files.certfile),
        "--ssl-keyfile",
        str(files.keyfile),
        ca=files.ca,
    )
    try:
        info = httpx.get(srv.http + "/v1/info", verify=srv.verify, timeout=10)
        assert info.status_code == 200
        assert "TLS: self-signed" not in srv.log.read_text()  # your own: nothing to explain
        assert not (Path(data) / "tls").exists()
    finally:
        stop_server(srv)
