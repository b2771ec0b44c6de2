"""After a turn is final: who spoke it, and what it says in English.

Both need the whole turn's audio after the streaming policy is done with it, so they run here,
outside the policy: the runner routes each final turn through `TurnEnricher.enrich` and holds
everything behind it until it is done, so clients still get events in order. Partials are never
delayed by it; a final turn is delayed by one translation decode and/or one speaker embedding.
A failure here costs the turn its label or translation, never the turn itself.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import replace
from typing import Protocol

import numpy as np

from streamscribe.engine.decoding import ACCURATE_WINDOW_S, DecodeRequest
from streamscribe.engine.scheduler import DecodeScheduler
from streamscribe.events import TurnUpdate, Word, majority_speaker

log = logging.getLogger(__name__)

RATE = 16000
PER_MS = RATE // 1000
PAD_MS = 200  # word times are tight: a little audio either side keeps edges whole


class SpeakerAssigner(Protocol):
    """One channel's speakers: a label per word of each final turn, stable for the session
    (`streamscribe.speakers.SessionSpeakers`). Called from a worker thread, turns in order."""

    def label_turn(self, audio: np.ndarray, words: list[tuple[int, int]]) -> list[str]: ...


class AudioHistory:
    """The last `seconds` of one channel's audio, addressed by stream time in ms."""

    def __init__(self, seconds: float = 120.0) -> None:
        self._cap = int(seconds * RATE)
        self._buf = np.zeros(0, dtype=np.float32)
        self._start = 0  # sample index of _buf[0]

    def append(self, samples: np.ndarray) -> None:
        self._buf = np.concatenate([self._buf, np.asarray(samples, dtype=np.float32)])
        extra = len(self._buf) - self._cap
        if extra > 0:
            self._buf = self._buf[extra:]
            self._start += extra

    def slice(self, start_ms: int, end_ms: int) -> np.ndarray:
        a = max(0, start_ms * PER_MS - self._start)
        b = max(a, end_ms * PER_MS - self._start)
        return self._buf[a:b]


class TurnEnricher:
    def __init__(
        self,
        scheduler: DecodeScheduler,
        key: str,
        channels: int,
        translate: bool = False,
        speakers: Sequence[SpeakerAssigner] | None = None,
        beam_size: int = 5,
        history_seconds: float = 120.0,
    ) -> None:
        self.scheduler = scheduler
        self.key = key
        self.translate = translate
        self.beam_size = beam_size
        self.history = [AudioHistory(history_seconds) for _ in range(channels)]
        self.speakers = list(speakers) if speakers else None  # one per channel
        # both end-of-turn messages of a turn (unformatted, formatted) share one enrichment
        self._done: dict[tuple[int, int], asyncio.Task] = {}

    def feed(self, channel: int, samples: np.ndarray) -> None:
        self.history[channel].append(samples)

    def wants(self, event: object) -> bool:
        return (
            isinstance(event, TurnUpdate)
            and event.end_of_turn
            and bool(event.words)
            and (self.translate or self.speakers is not None)
        )

    async def enrich(self, update: TurnUpdate) -> TurnUpdate:
        key = (update.channel, update.turn_order)
        task = self._done.get(key)
        if task is None:
            task = asyncio.ensure_future(self._work(update))
            self._done = {k: v for k, v in self._done.items() if k[0] != key[0] or k == key}
            self._done[key] = task
        try:
            labelled, translation = await task
        except Exception:
            log.exception("enriching turn %s failed; sent without it", key)
            return update
        words = update.words
        if labelled:
            # the formatted re-send has its own words (the final decode's): each takes the
            # label of the labelled word its time overlaps most
            labels = labels_by_time(labelled, words)
            words = tuple(replace(w, speaker=s) for w, s in zip(words, labels, strict=True))
        speaker = majority_speaker(words) if labelled and words else update.speaker
        return replace(update, words=words, speaker=speaker, translation=translation)

    async def _work(self, update: TurnUpdate) -> tuple[list[Word] | None, str | None]:
        start = max(0, update.words[0].start_ms - PAD_MS)
        end = update.words[-1].end_ms + PAD_MS
        audio = self.history[update.channel].slice(start, end)
        jobs = []
        if self.speakers is not None:
            spans = [(w.start_ms - start, w.end_ms - start) for w in update.words]
            tracker = self.speakers[update.channel]
            jobs.append(asyncio.to_thread(tracker.label_turn, audio, spans))
        if self.translate:
            jobs.append(self._translate(update, audio))
        results = await asyncio.gather(*jobs)
        labels = results[0] if self.speakers is not None else None
        translation = results[-1] if self.translate else None
        if labels is None or len(labels) != len(update.words):
            return None, translation
        labelled = [replace(w, speaker=s) for w, s in zip(update.words, labels, strict=True)]
        return labelled, translation

    async def _translate(self, update: TurnUpdate, audio: np.ndarray) -> str | None:
        if update.language == "en":
            return update.text
        if len(audio) == 0:
            return None
        request = DecodeRequest(
            audio,
            beam_size=self.beam_size,
            language=update.language,
            task="translate",
            final=True,
            min_window_s=ACCURATE_WINDOW_S,
        )
        result = await self.scheduler.submit(request, f"{self.key}:translate", kind="translate")
        return result.text.strip() if result is not None else None


async def label_speakers(
    turns: list[TurnUpdate], audio: np.ndarray, speakers: SpeakerAssigner
) -> list[TurnUpdate]:
    """Speaker labels for the turns of one channel of a whole file (offline transcription)."""
    enricher = TurnEnricher(
        None,  # type: ignore[arg-type]  # no decoding: speakers only
        "offline",
        1,
        speakers=[speakers],
        history_seconds=len(audio) / RATE + 1,
    )
    enricher.feed(0, audio)
    out = []
    for turn in turns:
        labelled = await enricher.enrich(replace(turn, channel=0))
        out.append(replace(labelled, channel=turn.channel))
    return out


def labels_by_time(labelled: Sequence[Word], words: Sequence[Word]) -> list[str]:
    """For each of `words`, the speaker of the `labelled` word its time overlaps most (the
    nearest one when none overlaps)."""
    out: list[str] = []
    for w in words:

        def closeness(x: Word, w: Word = w) -> tuple[int, int]:
            overlap = min(w.end_ms, x.end_ms) - max(w.start_ms, x.start_ms)
            middle = abs((w.start_ms + w.end_ms) - (x.start_ms + x.end_ms))
            return (overlap, -middle)

        best = max(labelled, key=closeness)
        out.append(best.speaker or "")
    return out
