"""The project's own SDK (sync and asyncio) against the real server, with real speech."""

from __future__ import annotations

import asyncio

from speech import joined, speech_or_skip, wer

from streamscribe.audio.wav import WavWriter, read_wav
from streamscribe.client import AsyncStreamingClient, FileStream, StreamingClient, Termination, Turn


def write_wav(path, audio) -> None:
    with WavWriter(path, 16000, 1) as w:
        w.write(audio)


def test_sync_client_streams_a_file_as_fast_as_the_server_takes_it(server, tmp_path):
    speech = joined(speech_or_skip(2), gap_s=1.5)
    source = tmp_path / "speech.wav"
    write_wav(source, speech.audio)
    saved = tmp_path / "sent.wav"
    turns: list[Turn] = []
    ended: list[Termination] = []
    with StreamingClient(server.ws, format_turns=True, save_audio=saved) as client:
        client.on("turn", lambda _c, t: turns.append(t))
        client.on("termination", lambda _c, t: ended.append(t))
        client.stream(FileStream(source, realtime=False))
    formatted = [t for t in turns if t.end_of_turn and t.turn_is_formatted]
    text = " ".join(t.transcript for t in formatted)
    assert wer(speech.text, text) <= 0.35, text
    assert ended and abs(ended[0].audio_duration_seconds - speech.seconds) <= 1
    audio, rate = read_wav(saved)
    assert rate == 16000 and abs(len(audio) / 16000 - speech.seconds) < 0.15


async def test_async_client_realtime_with_force_endpoint(server, tmp_path):
    speech = speech_or_skip(1)[0]
    source = tmp_path / "one.wav"
    write_wav(source, speech.audio)
    client = AsyncStreamingClient(server.ws, min_turn_silence=3000, max_turn_silence=6000)
    seen: list[Turn] = []
    client.on("turn", lambda _c, t: seen.append(t))
    async with client:
        async for chunk in FileStream(source, realtime=True):
            await client.send_audio(chunk)
        await client.force_endpoint()
        for _ in range(100):
            if any(t.end_of_turn for t in seen):
                break
            await asyncio.sleep(0.1)
    finals = [t for t in seen if t.end_of_turn]
    assert finals, "ForceEndpoint did not end the turn"
    assert wer(speech.text, " ".join(t.transcript for t in finals)) <= 0.35
