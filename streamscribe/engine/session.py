"""The streaming policy of one audio stream (one channel): turns, partials, finals.

Theory of operation. Audio arrives in arbitrary chunks. Silero VAD marks speech; a turn starts at
speech onset (with a little pre-roll). While the turn grows, the session asks for a partial decode
of the turn's window at a steady cadence that widens when decodes come back slowly, and when the
speaker pauses it asks at once (with the final beam), so the end-of-turn decision can use the
hypothesis' punctuation and the final is often ready before the silence rule fires. Consecutive
hypotheses go through LocalAgreement-2: their common prefix becomes final and is never changed;
the words an end-of-speech decode heard before the pause become final with it (no partial comes
during a pause, so a second hypothesis of them would wait for the speaker to resume). Word starts
after silence come from the VAD's onsets, not Whisper's alignment (`word_timing.py`).
When final words cover more than the window budget, their audio leaves the window and their text
becomes the prompt, so long turns cost the same per decode. A turn ends on enough trailing silence
(`min_turn_silence_ms` when the hypothesis ends a sentence, `max_turn_silence_ms` otherwise), a
forced endpoint, the end of the stream, or the maximum turn length; one final decode then fixes
the whole rest of the turn.

Turn state. A session is always in one `TurnState`:

    IDLE      no turn: between turns, only the pre-roll is kept
    SPEAKING  a turn is open: partials and the end-of-speech ("eager") decode run
    ENDING    the turn's end is decided; it waits for its final decode (or a fitting eager one)

and moves only along `_TRANSITIONS` (an illegal step raises `TurnStateError`, naming the state):
onset opens a turn, an endpoint (silence, ForceEndpoint, end of stream, maximum length) starts
ending it, the final result closes it, a turn that heard only noise is dropped, and a model
failure abandons the final decode (the turn stays open; the runner ends the session).

This object is pure policy: it never calls a model and never awaits. The runner asks it for the
next `DecodeRequest` (at most one in flight) and hands back the `DecodeResult` (or, when the
scheduler superseded it, `release`s it; when the model failed, `fail`s it); the calls return
the events to send. Memory is bounded: the window budget plus one pre-roll. A routine partial is
bound late: as it starts decoding (`refresh`, called by the scheduler) it takes the audio that
arrived while it waited in the shared queue, so a busy model delays a partial but does not make
it hear old audio (at 12 streams on 2 cores the lag's peak fell from 3.3 to 2.6 s).

Catching up under load. A session whose decodes come back slowly (`under_load`) and that has
fallen well behind (`CATCH_UP_BEHIND_MS` of audio no hypothesis covered, in a window longer than
`CATCH_UP_AFTER_MS`) does not ask for one ever-longer window: it decodes
its backlog oldest first in "catchup" windows of `CATCH_UP_WINDOW_MS`, and the words one such
decode hears (all but those near its end) become final at once, without a second, agreeing
hypothesis. So no single decode of a lagging session costs more than a short window, and the
shared model is never held for seconds by one session while another key's stream waits
(issue 18: fair shares), at the price of single-hypothesis finality for that session while it
is behind.

What lives elsewhere: word agreement (`agreement.py`), speech detection (`vad.py`), the
hallucination guards (`guards.py`), the decode contract (`decoding.py`), the async driving and
event ordering (`runner.py`), and speakers/translation (`enrichment.py`).
"""

from __future__ import annotations

import dataclasses
import enum
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from streamscribe.engine.agreement import (
    CONTEXT_WORDS,
    REVISED_WORD_SLACK_MS,
    HypWord,
    LocalAgreement,
    after_known,
)
from streamscribe.engine.decoding import ACCURATE_WINDOW_S, DecodeRequest, DecodeResult
from streamscribe.engine.guards import loop_start
from streamscribe.engine.vad import FRAME_MS, SileroStream, VadTracker
from streamscribe.engine.whisper_rules import FILLER_PROMPT
from streamscribe.engine.word_timing import snap_starts_to_speech
from streamscribe.events import Event, SpeechStarted, TurnUpdate, Word

RATE = 16000
SAMPLES_PER_MS = RATE // 1000
SENTENCE_END = (".", "?", "!", "。", "？", "！")
MIN_PARTIAL_WINDOW_MS = 200  # a partial over less new audio than this would hear nothing
# a final decode whose last word ends with this much of the turn's speech after it stopped early
EARLY_STOP_SPEECH_MS = 500
TAIL_PRE_ROLL_MS = 200  # a tail decode starts this far before the stopped decode's last word end
TRUSTED_DETECTION_MS = 3000  # a language detected over this much audio is kept for the turn
# ... or over this much, when the detection is confident (over the first second, tiny and base
# can be sure of the wrong language: German heard as Chinese)
CONFIDENT_DETECTION_MS = 1500
# a hypothesis "covers" the end of speech when it reaches this close to it: VAD marks the end a
# frame or three (32 ms each) after the last word the model times
COVERS_SPEECH_END_MS = 100
# end-of-turn confidence after a sentence end: from this at the first silent frame ...
SENTENCE_END_CONFIDENCE = 0.45
# ... growing by up to this as the silence reaches max_turn_silence_ms (0.45 .. 0.95)
SENTENCE_END_CONFIDENCE_RAMP = 0.5
# without a sentence end: 0.10 .. 0.35, below the default threshold (0.4), so only the silence
# rule ends such a turn
NO_SENTENCE_END_CONFIDENCE = 0.1
NO_SENTENCE_END_CONFIDENCE_RAMP = 0.25
CONFIDENCE_DECIMALS = 4  # end-of-turn confidence is rounded: it is sent on the wire
# a turn still in speech this long past max_turn_ms is cut mid-speech (a speaker who never
# pauses); before that, a long turn ends at its first short pause
MAX_TURN_OVERRUN_MS = 15000
LONG_TURN_PAUSE_MS = 150  # the pause that ends a turn longer than max_turn_ms
MIN_MOVED_WORD_MS = 40  # a word moved after the one before it (`in_order`) lasts at least this
PROMPT_CONTEXT_CHARS = 200  # the previous turn's text carried into the prompt, at most
# partials come no closer than a decode's model time plus this many times its wait in the
# scheduler's queue: an idle server decodes a session's growing window again as soon as the
# last decode is back (the model time is spent either way, and the CPU is free), while a loaded
# one spaces each session's partials by its queue, so fewer, longer partials share the model. A
# backend that does not report its model time counts the whole round trip as queue.
CADENCE_QUEUE_WAITS = 2
# weight of the newest decode in the round-trip average: a few decodes move it, one does not
ROUND_TRIP_WEIGHT = 0.3
MIN_LOADED_WINDOW_MS = 4000  # under load the window budget halves, but never below this
# under load, a window to decode longer than CATCH_UP_AFTER_MS, of which more than
# CATCH_UP_BEHIND_MS no hypothesis has covered yet, is decoded in catch-up windows of
# CATCH_UP_WINDOW_MS, oldest first; words ending within CATCH_UP_MARGIN_MS of a catch-up window's
# end may be cut and wait for the next window
CATCH_UP_AFTER_MS = 10000
CATCH_UP_BEHIND_MS = 5000
CATCH_UP_WINDOW_MS = 8000
CATCH_UP_MARGIN_MS = 1000
REPEATED_TAIL_WORDS = 8  # a continuation turn longer than this is never a mere repeat
CLOSING_MARKS = ("…", '"', ")")  # a formatted turn ending in one of these needs no full stop
TRAILING_MARKS = ",;:-"  # dropped before the full stop a formatted turn gets


def repeats_tail(
    previous: list[HypWord], words: list[HypWord], longest: int = REPEATED_TAIL_WORDS
) -> bool:
    """Whether `words` are just the last words of `previous` said again."""
    n = len(words)
    if n == 0 or n > longest or n > len(previous):
        return False
    return [w.norm for w in words] == [w.norm for w in previous[-n:]]


def in_order(words: list[HypWord]) -> list[tuple[int, int]]:
    """(start, end) of each word, never starting before the word before it.

    A turn's words come from several hypotheses whose alignments disagree, so a word can start
    before the one it follows. A few frames of disagreement: the word starts with the previous
    one. A word that lies wholly before the previous word's start (a later hypothesis placed
    the words around the seam earlier than the one that made the previous word final) follows
    the previous word with its own duration (at least `MIN_MOVED_WORD_MS`), instead of
    collapsing onto its start with no length: captions and word-level clients need words that
    follow each other. Each word's times depend only on the words before it, so the times of
    words already sent as final never change."""
    out: list[tuple[int, int]] = []
    prev_start = prev_end = 0
    for w in words:
        start, end = max(w.start_ms, prev_start), w.end_ms
        if end <= start and out:
            start = max(start, prev_end)
            end = start + max(w.end_ms - w.start_ms, MIN_MOVED_WORD_MS)
        end = max(end, start)
        out.append((start, end))
        prev_start, prev_end = start, end
    return out


def format_words(raw: list[str]) -> list[str]:
    """A formatted turn reads as a sentence: capital first letter, closing punctuation."""
    out = list(raw)
    if not out:
        return out
    for i, word in enumerate(out):
        if i == 0 or out[i - 1].endswith(SENTENCE_END):
            out[i] = word[:1].upper() + word[1:]
    if not out[-1].endswith((*SENTENCE_END, *CLOSING_MARKS)):
        out[-1] = out[-1].rstrip(TRAILING_MARKS) + "."
    return out


@dataclass(frozen=True)
class TurnSettings:
    """Per-session turn and decoding settings (the protocol-neutral knobs clients can set)."""

    min_turn_silence_ms: int = 400
    max_turn_silence_ms: int = 1280
    end_of_turn_confidence_threshold: float = 0.4
    format_turns: bool = False
    keyterms: tuple[str, ...] = ()
    prompt: str = ""
    filler_words: bool = False  # keep "um", "uh": the prompt starts with FILLER_PROMPT
    language: str | None = None  # pinned; None: detect (multilingual models)
    language_switch_confidence: float = 0.7  # detection must beat this to change language
    translate: bool = False  # add the English translation of each final turn
    vad_threshold: float = 0.5
    partial_interval_ms: int = 500
    first_partial_ms: int = 200
    window_budget_ms: int = 20000
    max_turn_ms: int = 45000
    final_beam_size: int = 5
    partial_beam_size: int = 1
    pre_roll_ms: int = 400
    tail_ms: int = 300
    max_interval_ms: int = 3000
    min_final_window_ms: int = 1000  # partials of shorter windows never make words final
    # a word of a trusted partial that ends this far before its window's end, with at least
    # `settle_confidence`, is final on that one hypothesis (-1: only when two agree); chosen
    # by replay (bench/README.md): word final P50 804 -> 700 ms at 0.9 (session 8), the words
    # as finalized no worse; 700 -> 580 ms at 0.6 (session 12), 2 of 904 words more wrong
    settle_margin_ms: int = 100
    settle_confidence: float = 0.6
    # decodes slower than this mean load: greedy finals, fewer partials; 1000 until session 15,
    # when 700 held 12 streams on 2 cores at a 2.5-2.8 s polled lag peak (bench/README.md)
    busy_rtt_ms: int = 700
    final_window_s: float = ACCURATE_WINDOW_S  # finals' encoder window (not under load)
    # decodes that wait in the queue longer than this (a shared, busy model, short of `busy_rtt`)
    # encode finals in `queued_final_window_s` instead: the end-of-speech decodes were 57 % of
    # the model's time at 12 streams, most of it encoding the 16 s window's padding
    queued_wait_ms: int = 150
    queued_final_window_s: float = 10.0
    # the silence after speech before the end-of-speech ("eager") decode runs: the VAD ends
    # speech after 96 ms, and most such pauses are inside a turn; a queued session waits longer,
    # so pauses the speaker goes on after cost no padded beam decode
    eager_silence_ms: int = 0
    queued_eager_silence_ms: int = 200

    def updated(self, changes: dict) -> TurnSettings:
        known = {f.name for f in dataclasses.fields(self)}
        unknown = set(changes) - known
        if unknown:
            raise ValueError(f"unknown turn settings: {', '.join(sorted(unknown))}")
        return dataclasses.replace(self, **changes)


@dataclass
class DecodeTicket:
    """What the session asked for; handed back with the result."""

    id: int
    kind: str  # "partial" | "eager" | "final" | "catchup" (a bounded window while behind)
    turn_order: int
    window_start_ms: int
    window_end_ms: int
    request: DecodeRequest = field(repr=False)


_ticket_ids = itertools.count(1)


class TurnState(enum.Enum):
    """Where a session is in its current turn (see the module docstring)."""

    IDLE = "idle"
    SPEAKING = "speaking"
    ENDING = "ending"


class TurnStateError(RuntimeError):
    """A turn-state step the policy never takes: a bug in the session, not in the client."""


# (state, step) -> next state; any other pair is a bug and raises TurnStateError
_TRANSITIONS: dict[tuple[TurnState, str], TurnState] = {
    (TurnState.IDLE, "open"): TurnState.SPEAKING,  # speech onset
    (TurnState.SPEAKING, "end"): TurnState.ENDING,  # endpoint: silence, force, max length
    (TurnState.SPEAKING, "drop"): TurnState.IDLE,  # the turn heard only noise
    (TurnState.ENDING, "close"): TurnState.IDLE,  # the final turn was emitted
    # the model failed: the final decode is abandoned, the turn stays open
    (TurnState.ENDING, "fail"): TurnState.SPEAKING,
    (TurnState.SPEAKING, "fail"): TurnState.SPEAKING,
    (TurnState.IDLE, "fail"): TurnState.IDLE,
}


class StreamingSession:
    def __init__(
        self,
        channel: int = 0,
        settings: TurnSettings | None = None,
        vad_probs: Callable[[np.ndarray], list[float]] | None = None,
    ) -> None:
        self.channel = channel
        self.settings = settings or TurnSettings()
        self._vad_probs = vad_probs or SileroStream().process
        self.vad = VadTracker(self.settings.vad_threshold)
        self.audio_ms = 0
        self._samples = 0
        self._buf = np.zeros(0, dtype=np.float32)
        self._buf_start = 0  # sample index of _buf[0]
        self.turn_order = 0
        self.state = TurnState.IDLE
        self._end_at_ms = 0
        self._window_start_ms = 0
        self._turn_start_ms = 0
        self._pending_start_ms: int | None = None
        self.agreement = LocalAgreement()
        self._committed: list[HypWord] = []
        self._last_hyp: list[HypWord] = []
        self._partial_words: list[HypWord] = []  # the last partial's words (stream time)
        # a final decode that stopped early: its words and where they end, until the tail
        # decode of the audio after them returns (once per turn)
        self._tail: tuple[list[HypWord], int] | None = None
        self._tail_decoded = False
        self._last_hyp_end_ms = 0
        self._last_hyp_kind = ""
        self._last_request_end_ms = 0
        self._turn_language: tuple[str | None, float | None] = (None, None)
        self._turn_language_trusted = False
        self.session_language: str | None = None  # the language of the last final turn
        self._context = ""
        self.in_flight: DecodeTicket | None = None
        self._rtt_ms = 0.0  # a decode's round trip, smoothed ...
        self._model_ms = 0.0  # ... and the part of it the model took
        self.last_update: TurnUpdate | None = None
        self._forced = False  # the turn being ended was ended by the client
        self._cut_off = False  # ... was ended mid-speech (ForceEndpoint, Terminate, end of stream)
        self._continuation = False  # this turn began where the last was cut mid-speech
        self._previous_words: list[HypWord] = []
        # (turn, window start, prompt, tokens) of the last hypothesis applied: the next partial's
        # draft while the turn, window start and prompt stay the same
        self._draft_source: tuple[int, int, str, tuple[int, ...]] | None = None
        # (start, end or None while it lasts) of the speech the VAD heard in the kept audio:
        # where words that Whisper starts in the silence before them really start
        self._speech_runs: list[tuple[int, int | None]] = []

    # ------------------------------------------------------------------ audio in
    def feed(self, samples: np.ndarray) -> list[Event]:
        """Add audio (float32 16 kHz mono); return SpeechStarted / final turn events."""
        events: list[Event] = []
        samples = np.asarray(samples, dtype=np.float32)
        self._buf = np.concatenate([self._buf, samples])
        self._samples += len(samples)
        self.audio_ms = self._samples // SAMPLES_PER_MS
        for prob in self._vad_probs(samples):
            change = self.vad.update(prob)
            if change == "end" and self._speech_runs:
                self._speech_runs[-1] = (self._speech_runs[-1][0], self.vad.state.speech_end_ms)
            if change == "start":
                start = self.vad.state.speech_start_ms
                self._speech_runs.append((start, None))
                if self.state is not TurnState.IDLE:
                    if self.state is TurnState.ENDING and self._pending_start_ms is None:
                        self._pending_start_ms = start  # the earliest onset wins
                    continue
                self._start_turn(start)
                events.append(SpeechStarted(self.channel, start))
        if self.state is TurnState.SPEAKING:
            events.extend(self._check_endpoint())
        self._trim()
        return events

    def _move(self, step: str) -> None:
        """Take one step of the turn state machine (`_TRANSITIONS`)."""
        try:
            self.state = _TRANSITIONS[(self.state, step)]
        except KeyError:
            raise TurnStateError(f"turn state {self.state.name}: cannot {step}") from None

    @property
    def ending(self) -> bool:
        """Whether the turn's end is decided and its final turn not yet emitted."""
        return self.state is TurnState.ENDING

    def _start_turn(self, speech_start_ms: int) -> None:
        self._move("open")
        buf_start_ms = self._buf_start // SAMPLES_PER_MS
        # the pre-roll never reaches back into audio the last turn already transcribed: a word
        # heard twice would be finalized twice
        self._turn_start_ms = max(
            buf_start_ms, speech_start_ms - self.settings.pre_roll_ms, self._end_at_ms
        )
        self._window_start_ms = self._turn_start_ms
        self._last_request_end_ms = self._turn_start_ms
        self._last_hyp = []
        self._partial_words = []
        self._tail, self._tail_decoded = None, False
        self._last_hyp_end_ms = self._turn_start_ms
        self._last_hyp_kind = ""
        self._turn_language = (None, None)
        self._turn_language_trusted = False

    def _trim(self) -> None:
        """Keep only the window (in a turn) or the pre-roll (between turns)."""
        if self.state is not TurnState.IDLE:
            keep_from_ms = self._window_start_ms
        else:
            keep_from_ms = self.audio_ms - self.settings.pre_roll_ms
        drop = keep_from_ms * SAMPLES_PER_MS - self._buf_start
        if drop > 0:
            self._buf = self._buf[drop:]
            self._buf_start += drop
        kept_ms = self._buf_start // SAMPLES_PER_MS
        while self._speech_runs and (end := self._speech_runs[0][1]) is not None and end < kept_ms:
            self._speech_runs.pop(0)

    def _audio(self, start_ms: int, end_ms: int) -> np.ndarray:
        a = max(0, start_ms * SAMPLES_PER_MS - self._buf_start)
        b = max(a, end_ms * SAMPLES_PER_MS - self._buf_start)
        return self._buf[a:b].copy()

    # ------------------------------------------------------------------ endpointing
    def end_of_turn_confidence(self) -> float:
        """How sure we are that the speaker finished: sentence end in a hypothesis that covers
        the end of speech, growing with the silence after it."""
        if self.vad.state.in_speech or not self._words_of_turn():
            return 0.0
        silence = self.audio_ms - self.vad.state.speech_end_ms
        covered = self._last_hyp_end_ms >= self.vad.state.speech_end_ms - COVERS_SPEECH_END_MS
        last = self._last_hyp[-1].raw if self._last_hyp else ""
        if not last and self.agreement.final:
            last = self.agreement.final[-1].raw
        ramp = min(1.0, silence / max(1, self.settings.max_turn_silence_ms))
        if covered and last.endswith(SENTENCE_END):
            confidence = SENTENCE_END_CONFIDENCE + SENTENCE_END_CONFIDENCE_RAMP * ramp
        else:
            confidence = NO_SENTENCE_END_CONFIDENCE + NO_SENTENCE_END_CONFIDENCE_RAMP * ramp
        return round(confidence, CONFIDENCE_DECIMALS)

    def _check_endpoint(self) -> list[Event]:
        s = self.settings
        turn_ms = self.audio_ms - self._turn_start_ms
        if self.vad.state.in_speech:
            if turn_ms >= s.max_turn_ms + MAX_TURN_OVERRUN_MS:
                return self._end_turn(self.audio_ms)
            return []
        silence = self.audio_ms - self.vad.state.speech_end_ms
        if (
            not self._words_of_turn()
            and silence >= s.max_turn_silence_ms
            and self._last_hyp_end_ms >= self.vad.state.speech_end_ms
            and self.in_flight is None
        ):
            return self._drop_turn()  # noise: nothing was said
        confident = self.end_of_turn_confidence() >= s.end_of_turn_confidence_threshold
        if (
            (silence >= s.min_turn_silence_ms and confident)
            or silence >= max(s.max_turn_silence_ms, s.min_turn_silence_ms)
            or (turn_ms >= s.max_turn_ms and silence >= LONG_TURN_PAUSE_MS)
        ):
            return self._end_turn(min(self.audio_ms, self.vad.state.speech_end_ms + s.tail_ms))
        return []

    def force_endpoint(self, by_client: bool = False) -> list[Event]:
        """End the current turn now (ForceEndpoint, Terminate, end of stream).

        `by_client` marks the final turn `forced` (a client's ForceEndpoint / Finalize)."""
        if self.state is not TurnState.SPEAKING:
            return []
        self._forced = by_client
        self._cut_off = True
        return self._end_turn(self.audio_ms)

    def _end_turn(self, end_ms: int) -> list[Event]:
        self._move("end")
        self._end_at_ms = max(end_ms, self._window_start_ms)
        last = self._last_hyp_kind
        if (
            self.in_flight is None
            and last == "eager"
            and self._last_hyp_end_ms >= self._end_at_ms - self.settings.tail_ms
        ):
            return self._finalize(self._last_hyp)  # the eager decode already heard it all
        return []

    def _drop_turn(self) -> list[Event]:
        self._move("drop")
        self.agreement.reset()
        self._committed = []
        return []

    # ------------------------------------------------------------------ decoding
    def _words_of_turn(self) -> list[HypWord]:
        return [*self._committed, *self.agreement.final, *self.agreement.tentative]

    def _interval_ms(self) -> int:
        s = self.settings
        cadence = self._model_ms + CADENCE_QUEUE_WAITS * (self._rtt_ms - self._model_ms)
        return int(min(s.max_interval_ms, max(s.partial_interval_ms, cadence)))

    @property
    def under_load(self) -> bool:
        """Decodes come back slower than `busy_rtt_ms` because they wait for a shared model;
        a long window's decode that is merely slow (one stream, a 20 s turn) is no load."""
        slow = self._rtt_ms > self.settings.busy_rtt_ms
        return slow and (self._model_ms == 0 or self.queued)

    @property
    def queued(self) -> bool:
        """Whether this session's decodes wait in the queue (other sessions share the model);
        never where the backend does not report its model time."""
        waited = self._rtt_ms - self._model_ms
        return self._model_ms > 0 and waited > self.settings.queued_wait_ms

    def _final_window_s(self, kind: str) -> float:
        """The encoder window a decode of `kind` is padded to (partials and load: none)."""
        s = self.settings
        if kind == "partial" or self.under_load:
            return 0.0
        if self.queued:
            return min(s.final_window_s, s.queued_final_window_s)
        return s.final_window_s

    def _eager_due(self) -> bool:
        """Whether the pause is long enough for the end-of-speech decode (`eager_silence_ms`,
        or `queued_eager_silence_ms` while this session's decodes wait in the queue)."""
        s = self.settings
        wait = max(s.eager_silence_ms, s.queued_eager_silence_ms if self.queued else 0)
        return self.audio_ms - self.vad.state.speech_end_ms >= wait

    def _final_beam(self) -> int:
        """Beam search for finals, unless the decoder is saturated (then greedy, as partials)."""
        return self.settings.partial_beam_size if self.under_load else self.settings.final_beam_size

    def note_round_trip(self, ms: float, model_ms: float = 0.0) -> None:
        """Wall time a decode took (queue + model) and, where the backend reports it, its model
        time: the time in the queue widens the partial cadence under load."""
        model_ms = model_ms if 0 < model_ms <= ms else 0.0
        w = ROUND_TRIP_WEIGHT
        first = self._rtt_ms == 0
        self._rtt_ms = ms if first else (1 - w) * self._rtt_ms + w * ms
        self._model_ms = model_ms if first else (1 - w) * self._model_ms + w * model_ms

    @property
    def lag_ms(self) -> int:
        """How long ago the oldest speech no hypothesis covers yet was heard (0 between turns,
        and while the turn's uncovered audio is all silence: a pause waits for no decode)."""
        if self.state is TurnState.IDLE:
            return 0
        covered = max(self._last_hyp_end_ms, self._window_start_ms)
        for start, end in self._speech_runs:
            if end is None or end > covered:
                return max(0, self.audio_ms - max(start, covered))
        return 0

    def lag_detail(self) -> dict:
        """Why this session is behind, for an operator (and the benchmark) to see at a lag peak:
        its lag, turn state, the decode it waits on, its partial cadence and round trips."""
        return {
            "lag_ms": self.lag_ms,
            "state": self.state.value,
            "in_flight": self.in_flight.kind if self.in_flight is not None else None,
            "window_ms": self.audio_ms - self._window_start_ms,
            "interval_ms": self._interval_ms(),
            "rtt_ms": round(self._rtt_ms),
            "model_ms": round(self._model_ms),
            "under_load": self.under_load,
        }

    @property
    def backlog_ms(self) -> int:
        """Audio received but not yet covered by any hypothesis, silence included (0 between
        turns): `lag_ms` before it left pauses out."""
        if self.state is TurnState.IDLE:
            return 0
        return max(0, self.audio_ms - max(self._last_hyp_end_ms, self._window_start_ms))

    def _prompt(self) -> str:
        s = self.settings
        parts = [FILLER_PROMPT] if s.filler_words else []
        if s.keyterms:
            parts.append(", ".join(s.keyterms) + ".")
        if s.prompt:
            parts.append(s.prompt)
        committed = " ".join(w.raw for w in self._committed)
        context = committed or self._context
        if context:
            parts.append(context[-PROMPT_CONTEXT_CHARS:])
        return " ".join(parts)

    def next_request(self) -> DecodeTicket | None:
        """The decode to run now, if any (only one per session at a time)."""
        if self.in_flight is not None or self.state is TurnState.IDLE:
            return None
        s = self.settings
        if self.state is TurnState.ENDING:
            if self._tail is not None:
                # the final decode stopped while the VAD heard the speaker go on: one more
                # decode of the audio after its last word, with its text as the prompt
                stopped, from_ms = self._tail
                context = " ".join(w.raw for w in stopped)
                return self._ticket(
                    "tail",
                    self._end_at_ms,
                    self._final_beam(),
                    start_ms=max(self._window_start_ms, from_ms - TAIL_PRE_ROLL_MS),
                    prompt=f"{self._prompt()} {context}".strip(),
                )
            if (catch_up := self._catch_up_end(self._end_at_ms)) is not None:
                return self._ticket("catchup", catch_up, s.partial_beam_size)
            return self._ticket("final", self._end_at_ms, self._final_beam())
        self._maybe_commit()
        if (catch_up := self._catch_up_end(self.audio_ms)) is not None:
            return self._ticket("catchup", catch_up, s.partial_beam_size)
        since = self.audio_ms - self._last_request_end_ms
        speech_ms = self.audio_ms - self.vad.state.speech_start_ms
        first = self._last_request_end_ms <= self._turn_start_ms
        if (
            not self.vad.state.in_speech
            and self._last_request_end_ms < self.vad.state.speech_end_ms
        ):
            if not self._eager_due():
                return None  # a pause too short yet to be the turn's end
            end = min(self.audio_ms, self.vad.state.speech_end_ms + s.tail_ms)
            return self._ticket("eager", end, self._final_beam())
        if not self.vad.state.in_speech:
            return None  # a pause: the eager decode above already heard everything
        if self.audio_ms - self._window_start_ms < MIN_PARTIAL_WINDOW_MS:
            return None  # a turn that began where the last one was cut: nothing new yet
        if first and speech_ms >= s.first_partial_ms:
            return self._ticket("partial", self.audio_ms, s.partial_beam_size)
        if self.last_update is None and not first and since >= s.first_partial_ms:
            # the turn's first partials heard no word yet: the next one comes as soon as the
            # first did, not a whole interval later
            return self._ticket("partial", self.audio_ms, s.partial_beam_size)
        if not first and since >= self._interval_ms():
            return self._ticket("partial", self.audio_ms, s.partial_beam_size)
        return None

    def _maybe_commit(self) -> None:
        """Move final words (and their audio) out of an over-long window into the prompt."""
        window = self.audio_ms - self._window_start_ms
        budget = self.settings.window_budget_ms
        if self.under_load:  # shorter windows cost less per decode
            budget = max(MIN_LOADED_WINDOW_MS, budget // 2)
        if window <= budget or not self.agreement.final:
            return
        cut = self.agreement.final[-1].end_ms
        if cut <= self._window_start_ms:
            return
        self._committed.extend(self.agreement.commit_before(cut))
        self.agreement.context = list(self._committed)
        self._window_start_ms = cut
        self._trim()

    def _catch_up_end(self, end_ms: int) -> int | None:
        """The end of a catch-up window, when the session is under load and behind: the window
        up to `end_ms` is longer than `CATCH_UP_AFTER_MS` and more than `CATCH_UP_BEHIND_MS` of it
        was never decoded; else None (a window the partials kept up with is decoded whole)."""
        if not self.under_load or end_ms - self._window_start_ms <= CATCH_UP_AFTER_MS:
            return None
        if end_ms - max(self._last_hyp_end_ms, self._window_start_ms) <= CATCH_UP_BEHIND_MS:
            return None
        return self._window_start_ms + CATCH_UP_WINDOW_MS

    def _caught_up(self, ticket: DecodeTicket, hyp: list[HypWord]) -> list[Event]:
        """Take a catch-up decode: the words it heard before its last `CATCH_UP_MARGIN_MS`
        become final and leave the window with their audio (the window always moves on)."""
        cut = ticket.window_end_ms - CATCH_UP_MARGIN_MS
        rest = self.agreement.after_final(hyp)
        heard = [w for w in rest if w.end_ms <= cut]
        if heard:
            start = heard[-1].end_ms
        elif rest and ticket.window_start_ms < rest[0].start_ms < cut:
            start = rest[0].start_ms  # a word running past the cut: keep all of its audio
        else:
            start = cut
        if start <= ticket.window_start_ms:
            start = cut
        self.agreement.accept(heard, start)
        self._committed.extend(self.agreement.commit_before(start))
        self.agreement.context = list(self._committed)
        self._window_start_ms = start
        self._last_hyp = []
        self._last_hyp_end_ms = max(self._last_hyp_end_ms, start)
        self._last_hyp_kind = ticket.kind
        self._draft_source = None
        self._trim()
        return self._partial_update()

    def _partial_update(self) -> list[Event]:
        """The turn so far (final and tentative words), if it changed since the last update."""
        update = self._update(
            [*self._committed, *self.agreement.final], self.agreement.tentative, False
        )
        if not update.words or (
            self.last_update is not None
            and [(w.text, w.final) for w in update.words]
            == [(w.text, w.final) for w in self.last_update.words]
        ):
            return []
        self.last_update = update
        return [update]

    def _draft(self, kind: str, start_ms: int) -> tuple[int, ...]:
        """A partial's draft (`DecodeRequest.draft`): the tokens of the last hypothesis over the
        same turn, window start and prompt, most of which the model writes again; none when
        any of them changed."""
        if kind != "partial" or self._draft_source is None:
            return ()
        turn, window_ms, prompt, tokens = self._draft_source
        if (turn, window_ms, prompt) != (self.turn_order, start_ms, self._prompt()):
            return ()
        return tokens

    def _ticket(
        self,
        kind: str,
        end_ms: int,
        beam: int,
        start_ms: int | None = None,
        prompt: str | None = None,
    ) -> DecodeTicket:
        s = self.settings
        start = self._window_start_ms if start_ms is None else start_ms
        first = self._last_request_end_ms <= self._turn_start_ms  # the turn's first decode
        end_ms = max(end_ms, start)
        language = s.language
        detected = self._turn_language[1] is not None
        if language is None and kind == "partial" and detected and self._turn_language_trusted:
            language = self._turn_language[0]  # detected once per turn, not on every partial
        request = DecodeRequest(
            audio=self._audio(start, end_ms),
            prompt=self._prompt() if prompt is None else prompt,
            beam_size=beam,
            language=language,
            final=kind in ("final", "tail"),  # the turn's end waits on these
            language_hint=self.session_language,
            switch_confidence=s.language_switch_confidence,
            min_window_s=self._final_window_s(kind),
            urgency=1 if kind == "eager" or first or self.state is TurnState.ENDING else 2,
            draft=self._draft(kind, start),
        )
        ticket = DecodeTicket(next(_ticket_ids), kind, self.turn_order, start, end_ms, request)
        self.in_flight = ticket
        self._last_request_end_ms = end_ms
        return ticket

    def apply(self, ticket: DecodeTicket, result: DecodeResult) -> list[Event]:
        """Take a decode result back; return the turn updates it produces."""
        if self.in_flight is not None and self.in_flight.id == ticket.id:
            self.in_flight = None
        if ticket.turn_order != self.turn_order:
            return []
        hyp = self._to_stream_time(ticket, result)
        if result.language:
            self._turn_language = (result.language, result.language_probability)
            # a detection over a short window is a guess: partials keep detecting until one
            # is confident or has heard enough audio; a language without a probability was
            # not detected (pinned, or an English-only model) and is no guess
            window = ticket.window_end_ms - ticket.window_start_ms
            probability = result.language_probability
            self._turn_language_trusted = (
                probability is None
                or window >= TRUSTED_DETECTION_MS
                or (
                    window >= CONFIDENT_DETECTION_MS
                    and probability >= self.settings.language_switch_confidence
                )
            )
        if ticket.kind == "tail":
            return self._finalize(self._with_tail(hyp))
        if ticket.kind == "final":
            return self._finalize(hyp)
        if ticket.window_start_ms != self._window_start_ms:
            return []  # the window moved while this was decoding
        if ticket.kind == "catchup":
            return self._caught_up(ticket, hyp)
        self._last_hyp = hyp
        if ticket.kind == "partial":
            self._partial_words = hyp
        self._last_hyp_end_ms = ticket.window_end_ms
        self._last_hyp_kind = ticket.kind
        self._draft_source = (
            ticket.turn_order,
            ticket.window_start_ms,
            ticket.request.prompt,
            result.tokens,
        )
        if self.state is TurnState.ENDING:
            if (
                ticket.kind == "eager"
                and ticket.window_end_ms >= self._end_at_ms - self.settings.tail_ms
            ):
                return self._finalize(hyp)
            return []
        # words heard in a very short window are often wrong: they are shown, not finalized;
        # so are words in a language detected over too little audio (German read as Chinese
        # over the first second), until the turn's language is trusted
        trusted = (
            ticket.window_end_ms - ticket.window_start_ms >= self.settings.min_final_window_ms
            and (not result.language or self._turn_language_trusted)
        )
        settled = (
            ticket.window_end_ms - self.settings.settle_margin_ms
            if self.settings.settle_margin_ms >= 0
            else None
        )
        self.agreement.insert(
            hyp,
            may_finalize=trusted,
            settled_before_ms=settled,
            min_confidence=self.settings.settle_confidence,
        )
        if ticket.kind == "eager" and trusted:
            # the speaker paused: what was said before the pause no later audio can change,
            # so the end-of-speech decode (final beam) makes it final without waiting for a
            # second hypothesis, which would come only after the speaker resumes
            # an end-of-speech window reaches at least the VAD's shortest pause past the speech
            pause_at = ticket.window_end_ms - self.vad.min_silence_frames * FRAME_MS
            heard = [w for w in self.agreement.tentative if w.start_ms < pause_at]
            if heard:
                self.agreement.accept(heard, heard[-1].end_ms)
        return self._partial_update()

    def _speech_after(self, ms: int) -> int:
        """How much of the turn's speech (VAD runs) lies after `ms`."""
        now = self.audio_ms
        return sum(
            max(0, min(now if end is None else end, self._end_at_ms) - max(start, ms))
            for start, end in self._speech_runs
        )

    def _to_stream_time(self, ticket: DecodeTicket, result: DecodeResult) -> list[HypWord]:
        """The result's words in stream time, in order, starting where the VAD heard them."""
        out: list[HypWord] = []
        lo, hi = ticket.window_start_ms, max(ticket.window_start_ms, ticket.window_end_ms)
        prev_end = lo
        for w in result.words:
            start = min(hi, max(prev_end, lo + round(w.start * 1000)))
            end = min(hi, max(start, lo + round(w.end * 1000)))
            out.append(HypWord(w.text, start, end, round(float(w.probability), 4)))
            prev_end = start
        return snap_starts_to_speech(out, self._speech_runs)

    # ------------------------------------------------------------------ turn updates
    def _update(self, final_words, tentative, end_of_turn, formatted=False) -> TurnUpdate:
        lang, lang_p = self._turn_language
        texts = (
            format_words([w.raw for w in final_words])
            if formatted
            else [w.norm for w in final_words]
        )
        times = in_order([*final_words, *tentative])
        n = len(final_words)
        words = [
            Word(text, start, end, w.confidence, True)
            for text, w, (start, end) in zip(texts, final_words, times[:n], strict=True)
        ] + [
            Word(w.norm, start, end, w.confidence, False)
            for w, (start, end) in zip(tentative, times[n:], strict=True)
        ]
        update = TurnUpdate(
            channel=self.channel,
            turn_order=self.turn_order,
            words=tuple(words),
            end_of_turn=end_of_turn,
            formatted=formatted,
            end_of_turn_confidence=1.0 if end_of_turn else self.end_of_turn_confidence(),
            language=lang if end_of_turn else None,
            language_confidence=lang_p if end_of_turn else None,
            forced=end_of_turn and self._forced,
        )
        return update

    def _with_tail(self, tail: list[HypWord]) -> list[HypWord]:
        """The stopped final decode's words, then the tail decode's words after them (matched
        by sequence where the tail says the last words again, else by time)."""
        assert self._tail is not None
        stopped, from_ms = self._tail
        self._tail = None
        spoken = [w for w in tail if w.norm]
        again = after_known([w for w in stopped if w.norm][-CONTEXT_WORDS:], spoken)
        if again is None:
            again = [w for w in spoken if w.start_ms >= from_ms - REVISED_WORD_SLACK_MS]
        return [*stopped, *again]

    def _finalize(self, hyp: list[HypWord]) -> list[Event]:
        spoken = [w for w in hyp if w.norm]
        heard_to = spoken[-1].end_ms if spoken else 0
        if (
            spoken
            and not self._tail_decoded
            and self._speech_after(heard_to) >= EARLY_STOP_SPEECH_MS
        ):
            # the decode stopped while the speaker went on (Whisper often ends its text where
            # the voice changes): decode the rest before the turn ends (`next_request`)
            self._tail, self._tail_decoded = (hyp, heard_to), True
            return []
        if spoken or not self._cut_off:
            # a decode that heard nothing, or was rejected as no speech, after the speaker
            # stopped overrules the partials (they heard noise)
            self.agreement.finish(hyp)
        else:
            # the turn was cut off mid-speech and its final decode heard nothing (a word cut
            # in half, a short greedy window under load): what the client was shown stays
            self.agreement.finish(None)
        if spoken and self._speech_after(heard_to) >= EARLY_STOP_SPEECH_MS:
            # the tail decode too stopped (or heard nothing) while the speaker went on: the
            # last partial's words after the last decoded word are all there is
            final = self.agreement.final
            after = max(heard_to, final[-1].end_ms if final else 0) - REVISED_WORD_SLACK_MS
            final.extend(w for w in self._partial_words if w.norm and w.start_ms >= after)
        self._partial_words = []
        sent_final = sum(1 for w in self.last_update.words if w.final) if self.last_update else 0
        words = [*self._committed, *self.agreement.final]
        cut = loop_start([w.raw for w in words])
        if cut is not None and cut >= sent_final:
            # a final decode that ran on past its audio repeats the turn; a repeat among words
            # the client already has as final was really said and stays
            words = words[: max(cut, len(self._committed) + 1)]
        # The formatted turn is the final decode of the whole window (beam search, full
        # context): words shown as final earlier stay as they were in the unformatted turn, but
        # the re-send carries the best transcript the model can give (DESIGN: "one final decode
        # of the turn ... is what clients get as the formatted turn").
        best = [w for w in hyp if w.norm]
        if self._committed:  # the prompt said again over the window is not new speech
            again = after_known(self._committed[-CONTEXT_WORDS:], best)
            best = best if again is None else again
        cut = loop_start([w.raw for w in best])
        if cut is not None:
            best = best[:cut]
        if best:
            # a final decode can stop early (Whisper often ends its text where the voice
            # changes): words the partials made final after its last word are not dropped
            heard_to = best[-1].end_ms - REVISED_WORD_SLACK_MS
            streamed = words[len(self._committed) :]
            after = after_known(best, streamed)
            best += [w for w in (streamed if after is None else after) if w.start_ms >= heard_to]
        formatted = [*self._committed, *best] if best else words
        if self._continuation and repeats_tail(self._previous_words, words):
            # a turn cut mid-speech continues in a new one; if the new one only says the end of
            # the old one again (the prompt read back over a short window), it said nothing
            words, formatted = [], []
        events: list[Event] = []
        if self._turn_language[0] is not None:
            self.session_language = self._turn_language[0]
        if words:
            events.append(self._update(words, [], True))
            if self.settings.format_turns:
                events.append(self._update(formatted, [], True, formatted=True))
            self._context = " ".join(w.raw for w in formatted)
            self._previous_words = list(formatted)
            self.turn_order += 1
        elif self.last_update is not None:
            # the client saw partials of this turn but the final decode heard nothing worth
            # keeping: the turn still ends (empty), so no client waits on it forever
            events.append(self._update([], [], True))
            self.turn_order += 1
        self._move("close")
        self._tail, self._tail_decoded = None, False
        self._forced = self._cut_off = False
        self.last_update = None
        self.agreement.reset()
        self._committed = []
        self._last_hyp = []
        self._last_hyp_kind = ""
        pending, self._pending_start_ms = self._pending_start_ms, None
        self._continuation = False
        if self.vad.state.in_speech or pending is not None:
            start = pending if pending is not None else self.vad.state.speech_start_ms
            self._start_turn(max(start, self._end_at_ms))
            self._continuation = start <= self._end_at_ms  # speech ran on across the cut
            events.append(SpeechStarted(self.channel, max(start, self._end_at_ms)))
        self._trim()
        return events

    # ------------------------------------------------------------------ settings
    def update_settings(self, changes: dict) -> None:
        self.settings = self.settings.updated(changes)
        self.vad.set_threshold(self.settings.vad_threshold)

    # ------------------------------------------------------------------ decodes that never return
    def wants_sooner(self) -> bool:
        """Whether the decode in flight is a routine partial while a more urgent one is due:
        the speaker paused (the end-of-speech decode) or the turn is ending (its final). The
        runner then withdraws the partial if it has not started decoding yet."""
        if self.in_flight is None or self.in_flight.kind != "partial":
            return False
        if self.state is TurnState.ENDING:
            return True
        return (
            self.state is TurnState.SPEAKING
            and not self.vad.state.in_speech
            and self.in_flight.window_end_ms < self.vad.state.speech_end_ms
            and self._eager_due()
        )

    def refresh(self, ticket: DecodeTicket) -> DecodeRequest:
        """`ticket`'s request as it starts decoding: a routine partial whose speaker is still
        speaking takes the audio that arrived while it waited in the queue (its window end
        moves to now); anything else, or a partial whose window or turn moved, stays as asked.
        The partial cadence still counts from when it was asked (`_last_request_end_ms`), and
        a pause that began while it waited still gets its end-of-speech decode."""
        if (
            ticket is not self.in_flight
            or ticket.kind != "partial"
            or ticket.turn_order != self.turn_order
            or self.state is not TurnState.SPEAKING
            or not self.vad.state.in_speech
            or ticket.window_start_ms != self._window_start_ms
            or self.audio_ms <= ticket.window_end_ms
        ):
            return ticket.request
        ticket.window_end_ms = self.audio_ms
        ticket.request = dataclasses.replace(
            ticket.request, audio=self._audio(ticket.window_start_ms, self.audio_ms)
        )
        return ticket.request

    def release(self, ticket: DecodeTicket) -> None:
        """The scheduler superseded `ticket` with a newer request: it is no longer in flight."""
        if self.in_flight is not None and self.in_flight.id == ticket.id:
            self.in_flight = None

    def fail(self) -> None:
        """The model failed: nothing is in flight and no final decode is awaited any more (the
        turn stays open; the runner ends the session)."""
        self.in_flight = None
        self._move("fail")

    @property
    def idle(self) -> bool:
        """Nothing in flight and nothing left to decode."""
        return self.in_flight is None and self.state is not TurnState.ENDING
