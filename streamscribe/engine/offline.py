"""Offline file transcription with the same backend the streaming engine uses.

A file is decoded (PyAV), cut into speech regions by silero VAD (regions of at most ~25 s, merged
across short pauses), and the regions are decoded in batches with the final beam. Each region
becomes one final, formatted TurnUpdate, so every exporter (txt, srt, vtt, json) works the same
for streamed and offline transcripts. Progress is reported in seconds of audio done.

What lives elsewhere: the HTTP upload routes that call this (`server/`), choosing between the
local model and the decode pool (`server/decoder_choice.py`), the exporters (`formats`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import numpy as np
from faster_whisper.vad import VadOptions, get_speech_timestamps

from streamscribe.audio.files import decode_file
from streamscribe.config import Settings
from streamscribe.engine.decoding import ACCURATE_WINDOW_S, DecodeRequest, DecodeResult, Transcriber
from streamscribe.engine.scheduler import DecodeScheduler
from streamscribe.engine.word_timing import snap_starts_to_speech
from streamscribe.events import TurnUpdate, Word

RATE = 16000
MAX_REGION_S = 25.0
BATCH = 4


def speech_regions(audio: np.ndarray, max_region_s: float = MAX_REGION_S) -> list[tuple[int, int]]:
    """(start, end) sample ranges of speech, each at most `max_region_s`, short gaps merged."""
    spans = get_speech_timestamps(
        audio,
        VadOptions(
            max_speech_duration_s=max_region_s, min_silence_duration_ms=500, speech_pad_ms=300
        ),
    )
    regions: list[tuple[int, int]] = []
    for s in spans:
        start, end = int(s["start"]), int(s["end"])
        if (
            regions
            and start - regions[-1][1] < 0.3 * RATE
            and end - regions[-1][0] <= max_region_s * RATE
        ):
            regions[-1] = (regions[-1][0], end)
        else:
            regions.append((start, end))
    return regions


def speech_runs(audio: np.ndarray) -> list[tuple[int, int | None]]:
    """(start_ms, end_ms) of speech as the VAD hears it, unpadded and split at pauses of 100 ms
    or more: where words that Whisper starts in the silence before them really start
    (`word_timing`)."""
    spans = get_speech_timestamps(
        audio, VadOptions(min_silence_duration_ms=100, speech_pad_ms=0, min_speech_duration_ms=64)
    )
    return [(int(s["start"]) * 1000 // RATE, int(s["end"]) * 1000 // RATE) for s in spans]


DecodeBatch = Callable[[list[DecodeRequest]], Awaitable[list[DecodeResult | None]]]


async def transcribe_audio_async(
    audio: np.ndarray,
    decode_batch: DecodeBatch,
    beam_size: int = 5,
    language: str | None = None,
    on_progress: Callable[[float, float], None] | None = None,
    task: str = "transcribe",
    prompt: str = "",
    channel: int = 0,
) -> list[TurnUpdate]:
    """Transcribe 16 kHz mono audio region by region through `decode_batch`.

    The server passes its shared scheduler here (`scheduler_batch`), so a long upload is decoded
    in batches beside the live sessions instead of blocking them; the CLI passes the model.
    `prompt` leads the first region (vocabulary, style); later regions hear the one before.
    """
    total = len(audio) / RATE
    # silero over a long file takes seconds: off the event loop, live sessions keep flowing
    regions = await asyncio.to_thread(speech_regions, audio)
    runs = await asyncio.to_thread(speech_runs, audio)
    turns: list[TurnUpdate] = []
    context = ""
    for i in range(0, len(regions), BATCH):
        batch = regions[i : i + BATCH]
        lead = " ".join(p for p in (prompt.strip(), context) if p)
        requests = [
            DecodeRequest(
                audio[a:b],
                prompt=lead,
                beam_size=beam_size,
                language=language,
                task=task,
                final=True,
                min_window_s=ACCURATE_WINDOW_S,
            )
            for a, b in batch
        ]
        results = await decode_batch(requests)
        for (a, _b), result in zip(batch, results, strict=True):
            if result is None:
                continue
            offset = a * 1000 // RATE
            words = tuple(
                snap_starts_to_speech(
                    [
                        Word(
                            w.text,
                            offset + round(w.start * 1000),
                            offset + round(w.end * 1000),
                            round(w.probability, 4),
                            True,
                        )
                        for w in result.words
                    ],
                    runs,
                )
            )
            if words:
                turns.append(
                    TurnUpdate(
                        channel=channel,
                        turn_order=len(turns),
                        words=words,
                        end_of_turn=True,
                        formatted=True,
                        end_of_turn_confidence=1.0,
                        language=result.language,
                        language_confidence=result.language_probability,
                    )
                )
        if turns:
            context = turns[-1].text[-200:]
        if on_progress is not None:
            on_progress(min(total, batch[-1][1] / RATE), total)
    if on_progress is not None:
        on_progress(total, total)
    return turns


def scheduler_batch(scheduler: DecodeScheduler, key: str) -> DecodeBatch:
    """Decode a batch of final requests through the shared scheduler (never superseded)."""

    async def decode(requests: list[DecodeRequest]) -> list[DecodeResult | None]:
        jobs = (scheduler.submit(r, key, kind="file") for r in requests)
        return list(await asyncio.gather(*jobs))

    return decode


def transcribe_audio(
    audio: np.ndarray,
    transcriber: Transcriber,
    beam_size: int = 5,
    language: str | None = None,
    on_progress: Callable[[float, float], None] | None = None,
    task: str = "transcribe",
    prompt: str = "",
) -> list[TurnUpdate]:
    """Synchronous form for the CLI: the model decodes each batch directly."""

    async def decode(requests: list[DecodeRequest]) -> list[DecodeResult | None]:
        return list(transcriber.transcribe_batch(requests))

    return asyncio.run(
        transcribe_audio_async(
            audio, decode, beam_size, language, on_progress, task=task, prompt=prompt
        )
    )


def transcribe_file(
    path: str | Path,
    settings: Settings,
    on_progress: Callable[[float, float], None] | None = None,
    transcriber: Transcriber | None = None,
    loader: Callable[[Settings], Transcriber] | None = None,
) -> list[TurnUpdate]:
    """Transcribe a whole audio/video file; raises AudioDecodeError / ModelNotFoundError.

    Without `transcriber`, `loader(settings)` makes one once the file has decoded; without a
    loader the model loads in this process. A caller that honours `--decoder` passes
    `loader=streamscribe.server.decoder_choice.load_transcriber`."""
    audio = decode_file(path)
    if transcriber is None:
        if loader is None:
            from streamscribe.engine.backends import load_local_transcriber

            loader = load_local_transcriber
        transcriber = loader(settings)
    return transcribe_audio(audio, transcriber, settings.final_beam_size, on_progress=on_progress)
