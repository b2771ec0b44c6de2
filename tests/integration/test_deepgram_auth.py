"""Deepgram authentication against a server that requires keys, with the official SDK.

`api_key=` sends `Authorization: Token KEY`; `access_token=` sends `Authorization: Bearer TOKEN`
with a token from `POST /v1/auth/grant` (the SDK's `auth.v1.tokens.grant`); browsers offer
`Sec-WebSocket-Protocol: token, KEY` and need the server to select `token`. Refusals are
HTTP 401 before the upgrade with Deepgram's `INVALID_AUTH` body, on the REST API too.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import httpx
import pytest
from conftest import start_server
from deepgram import DeepgramClient
from deepgram.core.api_error import ApiError
from deepgram.environment import DeepgramClientEnvironment
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

pytestmark = pytest.mark.timeout(120)

SILENCE = b"\x00\x00" * 8000  # half a second of 16 kHz linear16


@pytest.fixture(scope="module")
def keyed(tmp_path_factory):
    data = tmp_path_factory.mktemp("deepgram-auth")
    made = subprocess.run(
        [sys.executable, "-m", "streamscribe", "keys", "create", "dg", "--data-dir", str(data)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "NO_COLOR": "1"},
    )
    assert made.returncode == 0, made.stderr
    # no multilingual model either: a session that needs one is refused before the upgrade
    server = start_server(data, env={"STREAMSCRIBE_MULTILINGUAL_MODEL": ""})
    try:
        yield server, made.stdout.strip()
    finally:
        server.process.terminate()
        try:
            server.process.wait(30)
        except subprocess.TimeoutExpired:
            server.process.kill()


def sdk(server, **credentials) -> DeepgramClient:
    environment = DeepgramClientEnvironment(
        base=server.http, production=server.ws, agent=server.ws, agent_rest=server.http
    )
    return DeepgramClient(environment=environment, **credentials)


def short_session(dg: DeepgramClient) -> list[str]:
    with dg.listen.v1.connect(model="nova-3", encoding="linear16", sample_rate=16000) as socket:
        socket.send_media(SILENCE)
        socket.send_close_stream()
        types = [getattr(m, "type", None) for m in socket]
        assert socket._websocket.close_code == 1000
    return types


def refused_status(dg: DeepgramClient) -> tuple[int, dict | None]:
    with (
        pytest.raises((ApiError, InvalidStatus)) as info,
        dg.listen.v1.connect(model="nova-3", encoding="linear16", sample_rate=16000),
    ):
        pass
    error = info.value
    if isinstance(error, ApiError):  # SDK 7.17 with the legacy websockets client
        return error.status_code, None
    return error.response.status_code, json.loads(error.response.body)


def test_an_api_key_as_token(keyed):
    server, key = keyed
    assert short_session(sdk(server, api_key=key)) == ["Metadata"]


def test_a_wrong_key_is_refused_with_401(keyed):
    server, _ = keyed
    status, body = refused_status(sdk(server, api_key="sk_wrong"))
    assert status == 401
    if body is not None:
        assert body["err_code"] == "INVALID_AUTH" and "invalid" in body["err_msg"]


def test_no_key_is_refused_with_401_naming_the_header(keyed):
    server, _ = keyed
    url = f"{server.ws}/v1/listen?model=nova-3&encoding=linear16&sample_rate=16000"
    with pytest.raises(InvalidStatus) as info:
        connect(url)
    assert info.value.response.status_code == 401
    body = json.loads(info.value.response.body)
    assert body["err_code"] == "INVALID_AUTH" and "Authorization" in body["err_msg"]


def test_a_granted_token_as_bearer_opens_one_session(keyed):
    server, key = keyed
    grant = sdk(server, api_key=key).auth.v1.tokens.grant(ttl_seconds=30)
    assert grant.access_token and grant.expires_in == 30
    assert short_session(sdk(server, access_token=grant.access_token)) == ["Metadata"]
    status, _ = refused_status(sdk(server, access_token=grant.access_token))
    assert status == 401  # tokens here are single-use


def test_a_grant_needs_a_key(keyed):
    server, _ = keyed
    r = httpx.post(f"{server.http}/v1/auth/grant", json={"ttl_seconds": 30}, timeout=10)
    assert r.status_code == 401 and r.json()["err_code"] == "INVALID_AUTH"
    bad = httpx.post(
        f"{server.http}/v1/auth/grant",
        json={"ttl_seconds": 99999},
        headers={"Authorization": f"Token {keyed[1]}"},
        timeout=10,
    )
    assert bad.status_code == 400 and "ttl_seconds" in bad.json()["err_msg"]


def test_a_browser_passes_the_key_as_a_subprotocol(keyed):
    server, key = keyed
    url = f"{server.ws}/v1/listen?model=nova-3&encoding=linear16&sample_rate=16000"
    with connect(url, subprotocols=["token", key]) as ws:
        assert ws.subprotocol == "token"  # selected, or the browser drops the connection
        ws.send(SILENCE)
        ws.send(json.dumps({"type": "CloseStream"}))
        messages = [json.loads(m) for m in ws]
    assert [m["type"] for m in messages] == ["Metadata"]


def test_pre_recorded_needs_a_key_too(keyed):
    server, key = keyed
    r = httpx.post(f"{server.http}/v1/listen", content=b"RIFF", timeout=10)
    assert r.status_code == 401
    assert set(r.json()) == {"err_code", "err_msg", "request_id"}
    ok = httpx.post(
        f"{server.http}/v1/listen",
        content=b"not audio",
        headers={"Authorization": f"Token {key}"},
        timeout=10,
    )
    assert ok.status_code == 400  # past authentication: now the body is what is wrong


def test_a_language_no_served_model_knows_is_refused_before_the_upgrade(keyed):
    server, key = keyed
    url = f"{server.ws}/v1/listen?model=nova-3&encoding=linear16&sample_rate=16000&language=es"
    with pytest.raises(InvalidStatus) as info:
        connect(url, additional_headers={"Authorization": f"Token {key}"})
    assert info.value.response.status_code == 400
    body = json.loads(info.value.response.body)
    assert "multilingual" in body["err_msg"] and "--model" in body["err_msg"]
    r = httpx.post(
        f"{server.http}/v1/listen?language=es",
        content=b"RIFF",
        headers={"Authorization": f"Token {key}"},
        timeout=10,
    )
    assert r.status_code == 400 and "multilingual" in r.json()["err_msg"]
