"""The vendor's own parser consumes our pushes: a Node.js customer server (tests/node/consumer.mjs)
runs every frame through `StreamingData.parse` and every callback through
`parseCallAutomationEvent` from `@azure/communication-call-automation`, and checks each field
they parse. Driven by a real two-party call, two unmixed 8 kHz mu-law streams, with a locale
update mid-call. Skips only when node or npm is absent (installs tests/node with `npm ci` if
.ci/run has not)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
from speech import wer
from test_calls import (
    AGENT,
    CALLER,
    PHONE_WER,
    create_job,
    media_frames,
    send_media,
    two_party_call,
)

NODE_DIR = Path(__file__).resolve().parents[1] / "node"
PARSER = NODE_DIR / "node_modules" / "@azure" / "communication-call-automation"


def node_or_skip() -> str:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("node and npm are needed for the vendor-parser consumer")
    if not PARSER.exists():
        subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"], cwd=NODE_DIR, check=True, timeout=300
        )
    return node


@pytest.fixture(scope="module")
def parsed(server):
    node = node_or_skip()
    call = two_party_call(max_s=32.0, index=1)

    async def run():
        proc = await asyncio.create_subprocess_exec(
            node,
            str(NODE_DIR / "consumer.mjs"),
            cwd=NODE_DIR,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert proc.stdout is not None and proc.stdin is not None
        ready = json.loads(await asyncio.wait_for(proc.stdout.readline(), 30))
        lines: list[dict] = []

        async def read() -> None:
            while line := await proc.stdout.readline():
                lines.append(json.loads(line))

        reader = asyncio.create_task(read())
        try:
            async with httpx.AsyncClient(base_url=server.http, timeout=30) as http:
                job = await create_job(
                    http,
                    f"ws://127.0.0.1:{ready['ws']}/transcripts",
                    callbackUri=f"http://127.0.0.1:{ready['http']}/events",
                    transportBearerToken="node-secret",
                    options={"enableIntermediateResults": True},
                )
                call_id = job["callConnectionId"]

                async def update_locale() -> None:
                    await asyncio.sleep(3)
                    body = {"locale": "en-GB", "operationContext": "switch"}
                    r = await http.post(f"/v1/calls/{call_id}:updateTranscription", json=body)
                    assert r.status_code == 202, r.text

                updater = asyncio.create_task(update_locale())
                await send_media(server.ws + job["mediaUrl"], media_frames(call), speed=2.5)
                await updater
                for _ in range(600):
                    kinds = [x["event"]["kind"] for x in lines if x["type"] == "callback"]
                    if "TranscriptionStopped" in kinds:
                        break
                    await asyncio.sleep(0.1)
        finally:
            proc.stdin.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), 10)
            if proc.returncode is None:
                proc.kill()
            reader.cancel()
        return job, lines

    job, lines = asyncio.run(run())
    return call, job, lines


def frames(lines: list[dict]) -> list[dict]:
    return [x for x in lines if x["type"] == "frame"]


def test_the_vendor_parser_finds_nothing_wrong(parsed):
    _, _, lines = parsed
    assert frames(lines), lines
    problems = [(x.get("kind"), x["problems"]) for x in lines if x["problems"]]
    assert not problems, problems


def test_metadata_parses_to_the_job_ids_and_comes_first(parsed):
    _, job, lines = parsed
    first = frames(lines)[0]
    assert first["kind"] == "TranscriptionMetadata"
    assert first["parsed"] == {
        "subscriptionId": job["subscriptionId"],
        "locale": "en-US",
        "callConnectionId": job["callConnectionId"],
        "correlationId": job["correlationId"],
    }
    assert first["headers"] == {
        "authorization": "Bearer node-secret",
        "callConnectionId": job["callConnectionId"],
    }
    assert {x["conn"] for x in frames(lines)} == {0}


def test_participants_parse_to_a_phone_number_and_an_acs_user(parsed):
    _, _, lines = parsed
    seen = {
        json.dumps(x["parsed"]["participant"], sort_keys=True)
        for x in frames(lines)
        if x["kind"] == "TranscriptionData"
    }
    assert {json.loads(s)["kind"] for s in seen} == {"phoneNumber", "communicationUser"}
    for s in map(json.loads, seen):
        if s["kind"] == "phoneNumber":
            assert s["phoneNumber"] == CALLER.removeprefix("4:")
        else:
            assert s["communicationUserId"] == AGENT


def test_parsed_finals_match_each_participants_words(parsed):
    call, _, lines = parsed
    data = [x["parsed"] for x in frames(lines) if x["kind"] == "TranscriptionData"]
    assert any(d["resultState"] == "Intermediate" for d in data)
    finals = [d for d in data if d["resultState"] == "Final"]
    for pid, kind in ((CALLER, "phoneNumber"), (AGENT, "communicationUser")):
        text = " ".join(d["text"] for d in finals if d["participant"]["kind"] == kind)
        assert wer(call.reference(pid), text) <= PHONE_WER, (pid, text)
    for d in finals:
        first, last = d["words"][0], d["words"][-1]
        assert d["offsetInTicks"] <= first["offsetInTicks"] + 10_000_000
        assert last["offsetInTicks"] <= d["offsetInTicks"] + d["durationInTicks"] + 5_000_000


def test_callbacks_parse_as_started_updated_stopped(parsed):
    _, job, lines = parsed
    events = [x["event"] for x in lines if x["type"] == "callback"]
    assert [e["kind"] for e in events] == [
        "TranscriptionStarted",
        "TranscriptionUpdated",
        "TranscriptionStopped",
    ]
    for e in events:
        assert e["callConnectionId"] == job["callConnectionId"]
        assert e["correlationId"] == job["correlationId"]
    updated = events[1]
    assert updated["operationContext"] == "switch"
    assert updated["transcriptionUpdate"]["transcriptionStatusDetails"] == (
        "transcriptionLocaleUpdated"
    )
    assert updated["resultInformation"]["code"] == 200
