"""Drive a voice-agent framework's own STT plugin against a streamscribe server, as the framework
does: default options, 20 ms frames in real time, then the framework's own end of stream.

Runs in the clients' venv (`.venv/clients`, built by `make install`), never imported by the
tests: `python frameworks.py '{"client": ..., "ws": "ws://127.0.0.1:PORT", "pcm": PATH}'`.
Prints one JSON line per event the client itself reported, in order, then `{"event": "done"}`
(or `{"event": "crash", ...}`). Client-side errors are events too (`error`), so the test sees
them. `pcm` is 16 kHz mono 16-bit audio.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

FRAME_MS = 20
RATE = 16000


def emit(event: str, **fields: object) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


def frames(pcm: bytes) -> list[bytes]:
    step = RATE * 2 * FRAME_MS // 1000
    return [pcm[i : i + step] for i in range(0, len(pcm), step)]


async def paced(chunks: list[bytes]):
    """The frames at real time, as a microphone track delivers them."""
    t0 = time.monotonic()
    for i, chunk in enumerate(chunks):
        yield chunk
        delay = t0 + (i + 1) * FRAME_MS / 1000 - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)


# ---------------------------------------------------------------- LiveKit Agents


async def livekit(cfg: dict) -> None:
    import aiohttp
    from livekit import rtc
    from livekit.agents import stt as lk_stt

    http = cfg["ws"].replace("ws://", "http://", 1)
    async with aiohttp.ClientSession() as session:
        kind = cfg["client"]
        if kind == "livekit-assemblyai":
            from livekit.plugins import assemblyai

            engine = assemblyai.STT(api_key="test-key", base_url=cfg["ws"], http_session=session)
        elif kind == "livekit-deepgram":
            from livekit.plugins import deepgram

            engine = deepgram.STT(
                api_key="test-key", base_url=f"{http}/v1/listen", http_session=session
            )
        else:
            import openai as openai_sdk
            from livekit.plugins import openai

            client = openai_sdk.AsyncClient(api_key="test-key", base_url=f"{http}/v1")
            engine = openai.STT(client=client, use_realtime=True)
            engine._session = session  # outside a job there is no http context to take one from

        @engine.on("error")
        def on_error(error) -> None:  # the plugin's own error event (it retries, then gives up)
            emit("error", message=str(getattr(error, "error", error)))

        stream = engine.stream()

        async def feed() -> None:
            try:
                async for chunk in paced(frames(Path(cfg["pcm"]).read_bytes())):
                    samples = len(chunk) // 2
                    stream.push_frame(rtc.AudioFrame(chunk, RATE, 1, samples))
                stream.end_input()  # what the agent does when the participant's track ends
            except RuntimeError as exc:  # the stream already gave up (its error was reported)
                emit("error", message=str(exc))

        async def read() -> None:
            try:
                async for ev in stream:
                    text = ev.alternatives[0].text if ev.alternatives else ""
                    emit(NAMES.get(ev.type, str(ev.type)), text=text)
            except Exception as exc:  # the stream gave up: a client-side error
                emit("error", message=f"{type(exc).__name__}: {exc}")

        NAMES = {
            lk_stt.SpeechEventType.START_OF_SPEECH: "start_of_speech",
            lk_stt.SpeechEventType.INTERIM_TRANSCRIPT: "interim",
            lk_stt.SpeechEventType.PREFLIGHT_TRANSCRIPT: "preflight",
            lk_stt.SpeechEventType.FINAL_TRANSCRIPT: "final",
            lk_stt.SpeechEventType.END_OF_SPEECH: "end_of_speech",
            lk_stt.SpeechEventType.RECOGNITION_USAGE: "usage",
        }
        reader = asyncio.create_task(read())
        await feed()
        # the stream ends by itself where the plugin closes its socket on end_input (AssemblyAI,
        # Deepgram); the OpenAI one keeps its pooled socket for the next stream, so the agent
        # closes the stream when the participant leaves: here, a few seconds after the audio
        try:
            await asyncio.wait_for(asyncio.shield(reader), cfg.get("linger_s", 6))
        except TimeoutError:
            await stream.aclose()
            await reader
        await stream.aclose()
        if hasattr(engine, "aclose"):
            await engine.aclose()
    emit("closed")


# ---------------------------------------------------------------- Pipecat


async def pipecat(cfg: dict) -> None:
    from pipecat.frames.frames import (
        EndFrame,
        ErrorFrame,
        Frame,
        InputAudioRawFrame,
        InterimTranscriptionFrame,
        TranscriptionFrame,
    )
    from pipecat.pipeline.pipeline import Pipeline
    from pipecat.pipeline.runner import PipelineRunner
    from pipecat.pipeline.task import PipelineParams, PipelineTask
    from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

    http = cfg["ws"].replace("ws://", "http://", 1)
    if cfg["client"] == "pipecat-assemblyai":
        from pipecat.services.assemblyai.stt import AssemblyAISTTService

        service = AssemblyAISTTService(
            api_key="test-key", api_endpoint_base_url=f"{cfg['ws']}/v3/ws"
        )
    else:
        from pipecat.services.deepgram.stt import DeepgramSTTService

        service = DeepgramSTTService(api_key="test-key", base_url=http)

    class Sink(FrameProcessor):
        async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
            await super().process_frame(frame, direction)
            if isinstance(frame, InterimTranscriptionFrame):
                emit("interim", text=frame.text)
            elif isinstance(frame, TranscriptionFrame):
                emit("final", text=frame.text)
            elif isinstance(frame, ErrorFrame):
                emit("error", message=frame.error)
            await self.push_frame(frame, direction)

    class Errors(FrameProcessor):  # errors travel upstream, to the pipeline's source
        async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
            await super().process_frame(frame, direction)
            if isinstance(frame, ErrorFrame) and direction is FrameDirection.UPSTREAM:
                emit("error", message=frame.error)
            await self.push_frame(frame, direction)

    task = PipelineTask(
        Pipeline([Errors(), service, Sink()]),
        params=PipelineParams(audio_in_sample_rate=RATE),
        enable_rtvi=False,
    )

    async def feed() -> None:
        await asyncio.sleep(0.5)  # the pipeline starts (StartFrame) and the service connects
        async for chunk in paced(frames(Path(cfg["pcm"]).read_bytes())):
            await task.queue_frame(
                InputAudioRawFrame(audio=chunk, sample_rate=RATE, num_channels=1)
            )
        await task.queue_frame(EndFrame())  # the framework's own end of stream

    feeder = asyncio.create_task(feed())
    await PipelineRunner(handle_sigint=False).run(task)
    await feeder
    emit("closed")


class _ErrorLog:
    """Errors a framework only logs (Pipecat's loguru, LiveKit's logging) are events too."""

    def __call__(self, message) -> None:  # loguru sink
        emit("error", message=str(message.record["message"]))


def watch_logs() -> None:
    import logging

    class Handler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            emit("error", message=f"{record.name}: {record.getMessage()}")

    logging.getLogger().addHandler(Handler(logging.ERROR))
    try:
        from loguru import logger
    except ImportError:
        return
    logger.remove()  # Pipecat's debug chatter stays out of the test's output
    logger.add(_ErrorLog(), level="ERROR")


async def main(cfg: dict) -> None:
    watch_logs()
    if cfg["client"].startswith("livekit-"):
        await livekit(cfg)
    else:
        await pipecat(cfg)


if __name__ == "__main__":
    try:
        asyncio.run(main(json.loads(sys.argv[1])))
    except Exception as exc:
        emit("crash", message=f"{type(exc).__name__}: {exc}")
        raise
    emit("done")
