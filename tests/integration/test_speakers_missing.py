"""A server without the `speakers` extra refuses speaker labels at connect, naming the fix,
and keeps serving sessions that do not ask for them."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest
import websockets
from conftest import start_server
from websockets.exceptions import ConnectionClosed

HIDE = Path(__file__).parent / "without_speakers"


@pytest.fixture(scope="module")
def bare_server(tmp_path_factory):
    srv = start_server(Path(tmp_path_factory.mktemp("no-speakers")), env={"PYTHONPATH": str(HIDE)})
    yield srv
    srv.process.terminate()
    srv.process.wait(10)


async def messages_until_close(url: str) -> tuple[list[dict], int | None]:
    out: list[dict] = []
    async with websockets.connect(url, open_timeout=30) as ws:
        with contextlib.suppress(ConnectionClosed):
            async for raw in ws:
                out.append(json.loads(raw))
                if out[-1].get("type") == "Begin":
                    await ws.send(json.dumps({"type": "Terminate"}))
    return out, ws.close_code


async def test_speaker_labels_without_the_extra_are_refused_naming_it(bare_server):
    messages, code = await messages_until_close(
        f"{bare_server.ws}/v3/ws?sample_rate=16000&speaker_labels=true"
    )
    assert code == 3006
    assert messages[-1]["type"] == "Error"
    assert "pip install 'streamscribe[speakers]'" in messages[-1]["error"]


async def test_the_same_server_serves_sessions_without_labels(bare_server):
    messages, code = await messages_until_close(f"{bare_server.ws}/v3/ws?sample_rate=16000")
    assert code == 1000
    assert [m["type"] for m in messages] == ["Begin", "Termination"]
