"""The streaming policy of one stream, driven without a model.

A scripted speaker stands in for both models: `ScriptedVad` answers silero's question (speech
probability per 32 ms frame) from a list of speech intervals, and `Oracle` answers the decoder's
(the words heard in a ticket's window, times relative to the window start). A `Harness` feeds
audio frame by frame, serves the session's decode tickets (at once, or when the test says), and
keeps a log of what the session emitted, so each test reads as a transcript of one stream.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pytest

from streamscribe.engine.decoding import DecodeResult, RawWord
from streamscribe.engine.session import DecodeTicket, StreamingSession, TurnSettings, TurnState
from streamscribe.engine.whisper_rules import FILLER_PROMPT
from streamscribe.events import SpeechStarted, TurnUpdate

RATE = 16000
FRAME = 512  # samples per VAD frame at 16 kHz
FRAME_MS = 32
ONSET = 1024  # speech in these tests starts on a frame boundary

# ------------------------------------------------------------------ the scripted speaker


@dataclass(frozen=True)
class Spoken:
    text: str  # as the model would write it: cased, punctuated
    start_ms: int
    end_ms: int


def say(text: str, at: int = ONSET, step: int = 300, length: int = 250) -> list[Spoken]:
    """Words spoken one every `step` ms from `at`."""
    return [Spoken(w, at + i * step, at + i * step + length) for i, w in enumerate(text.split())]


def speech_of(words: list[Spoken], gap_ms: int = 200) -> list[tuple[int, int]]:
    """Speech intervals: words closer than `gap_ms` belong to one stretch of speech."""
    out: list[list[int]] = []
    for w in words:
        if out and w.start_ms - out[-1][1] < gap_ms:
            out[-1][1] = w.end_ms
        else:
            out.append([w.start_ms, w.end_ms])
    return [(a, b) for a, b in out]


class ScriptedVad:
    """Per-frame speech probabilities for the samples fed, like SileroStream.process."""

    def __init__(self, speech: list[tuple[int, int]]) -> None:
        self.speech = speech
        self.frames = 0
        self.pending = 0

    def __call__(self, samples: np.ndarray) -> list[float]:
        self.pending += len(samples)
        probs = []
        while self.pending >= FRAME:
            t = self.frames * FRAME_MS
            probs.append(0.9 if any(a <= t < b for a, b in self.speech) else 0.0)
            self.frames += 1
            self.pending -= FRAME
        return probs


Model = Callable[[DecodeTicket], DecodeResult]


def result(words: list[Spoken], window_start_ms: int, **kw) -> DecodeResult:
    raw = tuple(
        RawWord(
            w.text,
            max(0, w.start_ms - window_start_ms) / 1000,
            (w.end_ms - window_start_ms) / 1000,
            0.9,
        )
        for w in words
    )
    return DecodeResult(raw, " ".join(w.text for w in words), **kw)


def oracle(words: list[Spoken], **kw) -> Model:
    """A perfect model: the words whose audio lies inside the ticket's window."""

    def decode(ticket: DecodeTicket) -> DecodeResult:
        heard = [
            w
            for w in words
            if w.start_ms >= ticket.window_start_ms - 50 and w.end_ms <= ticket.window_end_ms
        ]
        return result(heard, ticket.window_start_ms, **kw)

    return decode


def silent_model(ticket: DecodeTicket) -> DecodeResult:
    return DecodeResult((), "")


# ------------------------------------------------------------------ the harness


# The timing knobs these transcripts are written against, pinned so that tuning the defaults
# does not rewrite every expected time below.
PINNED = dict(
    min_final_window_ms=0,  # most tests study agreement itself; one test below covers the guard
    settle_margin_ms=-1,  # two agreeing hypotheses make words final; one test covers settling
    busy_rtt_ms=10**9,
    first_partial_ms=300,
    partial_interval_ms=500,
    max_interval_ms=3000,
    min_turn_silence_ms=400,
    max_turn_silence_ms=1280,
    end_of_turn_confidence_threshold=0.4,
    pre_roll_ms=400,
    tail_ms=300,
    window_budget_ms=10000,
    max_turn_ms=45000,
    vad_threshold=0.5,
)


def settings(**changes) -> TurnSettings:
    return TurnSettings(**{**PINNED, **changes})


@dataclass
class Harness:
    words: list[Spoken] = field(default_factory=list)
    speech: list[tuple[int, int]] | None = None
    model: Model | None = None
    settings: TurnSettings = field(default_factory=settings)
    auto: bool = True  # serve every ticket at once (a model with no latency)

    def __post_init__(self) -> None:
        speech = speech_of(self.words) if self.speech is None else self.speech
        self.model = self.model or oracle(self.words)
        self.session = StreamingSession(settings=self.settings, vad_probs=ScriptedVad(speech))
        self.log: list[tuple[int, str, object]] = []  # (audio_ms, "feed"|ticket kind, event)
        self.tickets: list[DecodeTicket] = []
        self.n = 0  # samples fed so far

    # audio
    def step(self, frames: int = 1) -> None:
        """Feed `frames` VAD frames; each sample's value is its index, so windows can be
        checked against the stream position."""
        samples = np.arange(self.n, self.n + frames * FRAME, dtype=np.float32)
        self.n += len(samples)
        for event in self.session.feed(samples):
            self.log.append((self.session.audio_ms, "feed", event))
        if self.auto:
            self.serve()

    def run_until(self, ms: int, frames: int = 1) -> None:
        while self.session.audio_ms < ms:
            self.step(frames)

    # decoding
    def ask(self) -> DecodeTicket | None:
        ticket = self.session.next_request()
        if ticket is not None:
            self.tickets.append(ticket)
        return ticket

    def answer(self, ticket: DecodeTicket, res: DecodeResult | None = None) -> list:
        assert self.model is not None
        events = self.session.apply(ticket, res if res is not None else self.model(ticket))
        for event in events:
            self.log.append((self.session.audio_ms, ticket.kind, event))
        return events

    def serve(self) -> None:
        while (ticket := self.ask()) is not None:
            self.answer(ticket)

    # reading the log
    def events(self, kind: type) -> list:
        return [e for _, _, e in self.log if isinstance(e, kind)]

    @property
    def updates(self) -> list[TurnUpdate]:
        return self.events(TurnUpdate)

    @property
    def ends(self) -> list[TurnUpdate]:
        return [u for u in self.updates if u.end_of_turn and not u.formatted]

    def first(self, predicate) -> tuple[int, str, object]:
        return next(entry for entry in self.log if predicate(entry[2]))

    def end_at_ms(self) -> int:
        at, _, _ = self.first(lambda e: isinstance(e, TurnUpdate) and e.end_of_turn)
        return at

    @property
    def kinds(self) -> list[str]:
        return [t.kind for t in self.tickets]


def shown(update: TurnUpdate) -> str:
    """A turn update as a client would see it: final words marked with *."""
    return " ".join(w.text + ("*" if w.final else "") for w in update.words)


HELLO = say("Hello world how are you?")  # 1024 .. 2474 ms
SPEECH_END = 2496  # end of the last speech frame (2464 + 32)


# ------------------------------------------------------------------ onset and first partial


def test_silence_alone_starts_nothing():
    h = Harness(speech=[])
    h.run_until(3000)
    assert h.log == [] and h.tickets == []
    assert h.session.state is TurnState.IDLE
    assert h.session.lag_ms == 0
    # between turns only the pre-roll is kept
    assert len(h.session._buf) <= (h.settings.pre_roll_ms + FRAME_MS) * RATE // 1000


def test_speech_onset_emits_speech_started():
    h = Harness(HELLO)
    h.run_until(ONSET + FRAME_MS)
    assert h.log == []  # one speech frame is not yet speech
    h.step()
    assert h.log == [(ONSET + 2 * FRAME_MS, "feed", SpeechStarted(0, ONSET))]
    assert h.session.state is not TurnState.IDLE


def test_first_partial_after_first_partial_ms_of_speech():
    h = Harness(HELLO, auto=False)
    while h.ask() is None:
        h.step()
    (ticket,) = h.tickets
    assert h.session.audio_ms == first_partial_at(h.settings)
    assert ticket.kind == "partial"
    assert ticket.turn_order == 0
    # the window starts about one pre-roll before the onset (less the onset detection delay)
    # and ends now
    start, end = ticket.window_start_ms, ticket.window_end_ms
    assert ONSET - h.settings.pre_roll_ms <= start <= ONSET - h.settings.pre_roll_ms + 64
    assert end == h.session.audio_ms
    audio = ticket.request.audio
    assert len(audio) == (end - start) * RATE // 1000
    assert audio[0] == start * 16 and audio[-1] == end * 16 - 1
    assert ticket.request.beam_size == 1 and not ticket.request.final
    assert ticket.request.prompt == ""


def first_partial_at(settings: TurnSettings) -> int:
    """The first frame end with `first_partial_ms` of speech, once the onset is detected."""
    frames = max(2, -(-settings.first_partial_ms // FRAME_MS))
    return ONSET + frames * FRAME_MS


@pytest.mark.parametrize("first_partial_ms", [100, 300, 600])
def test_first_partial_ms_is_a_setting(first_partial_ms):
    pinned = settings(first_partial_ms=first_partial_ms)
    h = Harness(HELLO, settings=pinned, auto=False)
    while h.ask() is None:
        h.step()
    assert h.session.audio_ms == first_partial_at(pinned)


def test_at_most_one_request_in_flight():
    h = Harness(HELLO, auto=False)
    while h.ask() is None:
        h.step()
    first = h.tickets[0]
    for _ in range(20):  # 640 ms more audio, the decode still running
        h.step()
        assert h.ask() is None
    assert h.session.in_flight is first
    assert not h.session.idle
    h.answer(first)
    second = h.ask()  # more than one interval of new audio: asked at once
    assert second is not None and second.kind == "partial"
    assert second.window_end_ms == h.session.audio_ms


def test_partials_follow_at_the_partial_interval():
    h = Harness(HELLO)
    h.run_until(2400)
    assert [(t.kind, t.window_end_ms) for t in h.tickets] == [
        ("partial", ONSET + 320),
        ("partial", ONSET + 320 + 512),  # the first frame 500 ms later
        ("partial", ONSET + 320 + 1024),
    ]
    assert len({t.window_start_ms for t in h.tickets}) == 1  # the window grows from the onset


LONG_SENTENCE = say(" ".join(f"word{i}" for i in range(30)))  # 9 s of speech from ONSET


def partial_gaps(note: tuple[float, float]) -> list[int]:
    """The audio between consecutive partials of a 9 s turn whose decodes came back as `note`
    says (round trip, model time)."""
    h = Harness(LONG_SENTENCE)
    h.session.note_round_trip(*note)
    h.run_until(ONSET + 9000)
    partials = [t.window_end_ms for t in h.tickets if t.kind == "partial"]
    assert partials[0] == ONSET + 320  # the turn's first partial does not wait for the cadence
    return [b - a for a, b in zip(partials, partials[1:], strict=False)]


def test_the_partial_interval_widens_when_decodes_come_back_slowly():
    gaps = partial_gaps((2000, 0))  # 2 x round trip = 4000 ms, over the cap (3000 ms)
    assert len(gaps) >= 2 and all(3000 <= g < 3000 + 64 for g in gaps)


def test_an_idle_server_spaces_partials_by_the_model_time_a_queued_one_by_its_queue():
    """A decode that took 900 ms of model time and waited for nothing: the next partial comes
    as soon as one would be answered (900 ms), not two round trips later (1800 ms), since the
    CPU is idle. The same 900 ms of model time after 400 ms in the queue: 900 + 2 x 400."""
    idle = partial_gaps((900, 900))
    assert len(idle) >= 5 and all(900 <= g < 900 + 64 for g in idle)
    queued = partial_gaps((1300, 900))
    assert len(queued) >= 3 and all(1700 <= g < 1700 + 64 for g in queued)
    unknown = partial_gaps((900, 0))  # no model time reported: all of it counts as queue
    assert len(unknown) >= 3 and all(1800 <= g < 1800 + 64 for g in unknown)


def test_lag_is_the_age_of_the_oldest_speech_no_hypothesis_covers_yet():
    h = Harness(HELLO, auto=False)
    h.run_until(ONSET + 320)
    ticket = h.ask()
    h.run_until(ONSET + 1000)
    onset = h.session._speech_runs[0][0]
    assert ticket.window_start_ms < onset  # the pre-roll before the speech is not lag
    assert h.session.lag_ms == h.session.audio_ms - onset
    assert h.session.backlog_ms == h.session.audio_ms - ticket.window_start_ms
    h.answer(ticket)
    assert h.session.lag_ms == h.session.audio_ms - ticket.window_end_ms
    assert h.session.backlog_ms == h.session.lag_ms


def test_lag_detail_names_what_a_behind_session_waits_on():
    h = Harness(HELLO, auto=False)
    h.run_until(ONSET + 320)
    ticket = h.ask()
    h.run_until(ONSET + 1000)
    detail = h.session.lag_detail()
    assert detail["lag_ms"] == h.session.lag_ms > 0
    assert detail["state"] == "speaking" and detail["in_flight"] == "partial"
    assert detail["window_ms"] == h.session.audio_ms - ticket.window_start_ms
    h.answer(ticket)
    assert h.session.lag_detail()["in_flight"] is None


def test_a_pause_the_end_of_speech_decode_covered_is_no_lag():
    h = Harness(HELLO, settings=settings(min_turn_silence_ms=3000, max_turn_silence_ms=5000))
    h.run_until(SPEECH_END + 1500)  # a long pause, the turn still open
    assert h.session.state is TurnState.SPEAKING and h.kinds[-1] == "eager"
    assert h.session.lag_ms == 0
    assert h.session.backlog_ms == h.session.audio_ms - h.tickets[-1].window_end_ms > 1000


# ------------------------------------------------------------------ partial turn updates


def test_words_become_final_after_two_agreeing_hypotheses():
    h = Harness(HELLO)
    h.run_until(2400)
    assert [shown(u) for u in h.updates] == [
        "hello",
        "hello* world",
        "hello* world* how are",
    ]
    assert all(not u.end_of_turn and u.turn_order == 0 for u in h.updates)
    assert h.updates[1].words[0].start_ms == 1024 and h.updates[1].words[0].end_ms == 1274


def test_partials_are_lower_case_without_punctuation():
    h = Harness(say("Hello, World! How"))
    h.run_until(2600)
    assert all(w.text == w.text.lower().strip(",!") for u in h.updates for w in u.words)


def test_a_hypothesis_that_changes_nothing_sends_no_update():
    h = Harness(HELLO, auto=False)
    h.run_until(ONSET + 320)
    ticket = h.ask()
    heard = h.model(ticket)
    assert [shown(u) for u in h.answer(ticket, heard)] == ["hello"]
    h.run_until(ONSET + 900)
    assert [shown(u) for u in h.answer(h.ask(), heard)] == ["hello*"]
    h.run_until(ONSET + 1500)
    assert h.answer(h.ask(), heard) == []  # same words, same finality: nothing to send


def test_end_of_turn_confidence_is_zero_while_speaking():
    h = Harness(HELLO)
    h.run_until(2400)
    assert {u.end_of_turn_confidence for u in h.updates} == {0.0}


# ------------------------------------------------------------------ pause and end of turn


def test_a_pause_asks_at_once_for_an_eager_decode_with_the_final_beam():
    h = Harness(HELLO, auto=False)
    while True:
        h.step()
        eager = h.ask()
        if eager is not None and eager.kind == "eager":
            break
        if eager is not None:
            h.answer(eager)
    assert h.kinds == ["partial", "partial", "partial", "eager"]
    assert h.session.audio_ms == SPEECH_END + 96  # three silent frames end the speech
    assert eager is not None and eager.kind == "eager"
    assert eager.window_end_ms == SPEECH_END + 96  # speech end + tail, capped at now
    assert eager.request.beam_size == h.settings.final_beam_size
    assert not eager.request.final


def test_a_sentence_end_ends_the_turn_after_min_turn_silence():
    h = Harness(HELLO)
    h.run_until(5000)
    assert h.end_at_ms() == SPEECH_END + 416  # first frame with >= 400 ms of silence
    # the eager decode heard the whole turn: no separate final decode
    assert h.kinds == ["partial", "partial", "partial", "eager"]
    (end,) = h.ends
    assert shown(end) == "hello* world* how* are* you*"
    assert end.end_of_turn_confidence == 1.0
    assert end.turn_order == 0
    assert h.session.turn_order == 1 and h.session.state is TurnState.IDLE


def test_the_eager_hypothesis_raises_end_of_turn_confidence():
    h = Harness(HELLO)
    h.run_until(SPEECH_END + 200)
    last = h.updates[-1]
    assert not last.end_of_turn
    assert last.end_of_turn_confidence >= h.settings.end_of_turn_confidence_threshold


def test_min_turn_silence_is_a_setting():
    h = Harness(HELLO, settings=settings(min_turn_silence_ms=800))
    h.run_until(6000)
    assert h.end_at_ms() == SPEECH_END + 800
    # no partials run in the silence: the eager decode at the pause already heard the whole turn
    assert h.kinds[-1] == "eager"
    assert shown(h.ends[0]) == "hello* world* how* are* you*"


UNFINISHED = say("Hello world how are you")  # no sentence end


def test_without_a_sentence_end_the_turn_ends_by_max_turn_silence_at_the_latest():
    h = Harness(UNFINISHED, settings=settings(end_of_turn_confidence_threshold=1.0))
    h.run_until(6000)
    assert h.end_at_ms() == SPEECH_END + 1280
    assert shown(h.ends[0]) == "hello* world* how* are* you*"


def test_a_threshold_nothing_reaches_makes_every_turn_wait_for_max_turn_silence():
    h = Harness(HELLO, settings=settings(end_of_turn_confidence_threshold=1.0))
    h.run_until(6000)
    assert h.end_at_ms() == SPEECH_END + 1280


def test_without_a_sentence_end_the_turn_does_not_end_at_min_turn_silence():
    h = Harness(UNFINISHED)
    h.run_until(SPEECH_END + 900)
    assert h.ends == []
    assert h.session.state is not TurnState.IDLE


def test_without_a_sentence_end_the_turn_waits_for_max_turn_silence():
    h = Harness(UNFINISHED)
    h.run_until(6000)
    assert h.end_at_ms() >= SPEECH_END + 1280


def test_a_short_pause_inside_a_sentence_does_not_end_the_turn():
    words = say("so I was thinking", at=ONSET) + say("that we could go.", at=ONSET + 1500 + 200)
    h = Harness(words)
    h.run_until(8000)
    assert len(h.ends) == 1
    assert shown(h.ends[0]) == "so* i* was* thinking* that* we* could* go*"


# ------------------------------------------------------------------ formatted turns, next turn


def test_format_turns_sends_unformatted_then_formatted_with_the_same_turn_order():
    h = Harness(HELLO, settings=settings(format_turns=True))
    h.run_until(5000)
    ended = [u for u in h.updates if u.end_of_turn]
    assert [(u.turn_order, u.formatted) for u in ended] == [(0, False), (0, True)]
    assert ended[0].text == "hello world how are you"
    assert ended[1].text == "Hello world how are you?"
    assert [(w.start_ms, w.end_ms) for w in ended[0].words] == [
        (w.start_ms, w.end_ms) for w in ended[1].words
    ]
    assert all(w.final for w in ended[1].words)


def test_a_formatted_turn_reads_as_a_sentence():
    h = Harness(say("well it works"), settings=settings(format_turns=True))
    h.run_until(5000)
    assert h.updates[-1].formatted
    assert h.updates[-1].text == "Well it works."


def test_a_final_decode_that_stops_early_is_followed_by_a_decode_of_the_rest():
    """Whisper's final decode can end its text early (at a change of voice) while the VAD hears
    the speaker go on: one more decode, of the audio after its last word with its text as the
    prompt, hears the rest, including what came after the last partial."""
    words = say("His father died. When is a lobster not a lobster?")
    heard = oracle(words)

    def stops_early(ticket: DecodeTicket) -> DecodeResult:
        result = heard(ticket)
        if ticket.kind in ("partial", "tail"):
            return result
        return DecodeResult(result.words[:3], "His father died.")  # end of speech, or final

    h = Harness(words, model=stops_early, settings=settings(format_turns=True))
    h.run_until(8000)
    plain, formatted = [u for u in h.updates if u.end_of_turn]
    assert plain.text == "his father died when is a lobster not a lobster"
    assert formatted.text == "His father died. When is a lobster not a lobster?"
    tails = [t for t in h.tickets if t.kind == "tail"]
    died = words[2].end_ms
    assert len(tails) == 1 and tails[0].window_start_ms == died - 200
    assert tails[0].request.prompt == "His father died."
    assert tails[0].request.beam_size == h.settings.final_beam_size
    assert tails[0].request.final  # scheduled as a final: never superseded by a partial
    times = [(w.start_ms, w.end_ms) for w in plain.words]
    assert times[3:] == [(w.start_ms, w.end_ms) for w in words[3:]]
    # one tail per turn: the next turn may have its own
    assert h.session.idle and h.session._tail is None


def test_words_a_final_decode_stopped_before_stay_in_the_formatted_turn():
    """When the tail decode stops early too, the words the partials heard after the last
    decoded word are kept, in the turn and in its formatted re-send. (A final decode that hears
    nothing still overrules them.)"""
    words = say("His father died. When is a lobster not a lobster?")
    heard = oracle(words)

    def stops_early(ticket: DecodeTicket) -> DecodeResult:
        result = heard(ticket)
        if ticket.kind == "partial":
            return result
        if ticket.kind == "tail":
            return DecodeResult((), "")  # heard nothing more
        return DecodeResult(result.words[:3], "His father died.")  # end of speech, or final

    h = Harness(words, model=stops_early, settings=settings(format_turns=True))
    h.run_until(8000)
    plain, formatted = [u for u in h.updates if u.end_of_turn]
    # the last partial heard up to "a" (its window ended inside "lobster"): its words after
    # the final decode's last word are kept too, final or not; what no decode heard is lost
    assert plain.text == "his father died when is a lobster not a"
    assert formatted.text == "His father died. When is a lobster not a."


def test_without_format_turns_there_is_one_end_of_turn_message():
    h = Harness(HELLO)
    h.run_until(5000)
    assert len([u for u in h.updates if u.end_of_turn]) == 1


def test_the_next_turn_increments_turn_order_and_hears_the_last_one_as_prompt():
    words = HELLO + say("I am fine.", at=5024)
    h = Harness(words, settings=settings(format_turns=True))
    h.run_until(9000)
    assert h.events(SpeechStarted) == [SpeechStarted(0, ONSET), SpeechStarted(0, 5024)]
    assert [(u.turn_order, u.formatted, u.text) for u in h.updates if u.end_of_turn] == [
        (0, False, "hello world how are you"),
        (0, True, "Hello world how are you?"),
        (1, False, "i am fine"),
        (1, True, "I am fine."),
    ]
    second = [t for t in h.tickets if t.turn_order == 1]
    assert second and all(t.request.prompt == "Hello world how are you?" for t in second)
    # turn 1's SpeechStarted comes before its first update
    order = [e for _, _, e in h.log]
    assert order.index(SpeechStarted(0, 5024)) < order.index(
        next(u for u in h.updates if u.turn_order == 1)
    )


def test_keyterms_and_prompt_lead_the_decode_prompt():
    pinned = settings(keyterms=("Ada", "Grace Hopper"), prompt="Meeting notes.")
    h = Harness(HELLO + say("Bye.", at=5024), settings=pinned)
    h.run_until(8000)
    assert h.tickets[0].request.prompt == "Ada, Grace Hopper. Meeting notes."
    assert h.tickets[-1].request.prompt == (
        "Ada, Grace Hopper. Meeting notes. Hello world how are you?"
    )


def test_filler_words_put_fillers_first_in_the_prompt():
    """Whisper writes "um" and "uh" only when its prompt shows them."""
    h = Harness(HELLO, settings=settings(filler_words=True, keyterms=("Ada",)))
    h.run_until(5000)
    assert h.tickets[0].request.prompt == f"{FILLER_PROMPT} Ada."


def test_the_language_of_the_decode_is_on_the_end_of_turn_only():
    h = Harness(HELLO, model=oracle(HELLO, language="es", language_probability=0.8))
    h.run_until(5000)
    assert {(u.language, u.language_confidence) for u in h.updates if not u.end_of_turn} == {
        (None, None)
    }
    assert (h.ends[0].language, h.ends[0].language_confidence) == ("es", 0.8)


def test_a_pinned_language_goes_into_every_request():
    h = Harness(HELLO, settings=settings(language="de"))
    h.run_until(5000)
    assert {t.request.language for t in h.tickets} == {"de"}


# ------------------------------------------------------------------ ForceEndpoint


def test_force_endpoint_asks_for_a_final_decode_of_the_turn_so_far():
    h = Harness(say("one two three four five six seven eight"), auto=False)
    h.run_until(2000)
    assert h.session.force_endpoint() == []
    final = h.ask()
    assert final.kind == "final"
    assert final.request.final and final.request.beam_size == h.settings.final_beam_size
    assert final.window_start_ms == h.tickets[0].window_start_ms  # the whole turn
    assert final.window_end_ms == 2016
    events = h.answer(final)
    end = events[0]
    assert isinstance(end, TurnUpdate) and end.end_of_turn
    assert end.text == "one two three"
    assert h.session.turn_order == 1
    # the speaker is still talking: a new turn starts where the old one ended
    assert events[1:] == [SpeechStarted(0, 2016)]
    assert h.session.state is not TurnState.IDLE


def test_force_endpoint_waits_for_the_decode_in_flight():
    h = Harness(HELLO, auto=False)
    h.run_until(ONSET + 320)
    partial = h.ask()
    h.run_until(2000)
    h.session.force_endpoint()
    assert h.ask() is None  # one at a time, even for a final
    assert h.answer(partial) == []  # a partial that lands while ending shows nothing
    final = h.ask()
    assert final.kind == "final"
    assert h.answer(final)[0].end_of_turn


def test_force_endpoint_twice_or_without_a_turn_does_nothing():
    h = Harness(HELLO, auto=False)
    assert h.session.force_endpoint() == []
    assert h.ask() is None
    h.run_until(2000)
    h.session.force_endpoint()
    final = h.ask()
    assert h.session.force_endpoint() == []
    assert h.ask() is None
    h.answer(final)
    assert h.session.idle


def test_force_endpoint_after_the_eager_decode_needs_no_final_decode():
    h = Harness(HELLO)
    h.run_until(SPEECH_END + 200)
    assert h.kinds[-1] == "eager"
    events = h.session.force_endpoint()
    assert [e.end_of_turn for e in events] == [True]
    assert h.ask() is None


def test_speech_during_a_slow_final_decode_starts_the_next_turn():
    words = say("Good morning.") + say("Hi there.", at=3008)
    h = Harness(words, auto=False)
    held = None
    while h.session.audio_ms < 6000:
        h.step()
        ticket = held or h.ask()
        if ticket is None:
            continue
        if ticket.kind == "eager" and ticket.turn_order == 0 and h.session.audio_ms < 3500:
            held = ticket  # the decode that will close turn 0 is slow
            continue
        held = None
        h.answer(ticket)
    assert [(u.turn_order, u.text) for u in h.ends] == [(0, "good morning"), (1, "hi there")]
    assert h.events(SpeechStarted)[1].at_ms <= 3008


def test_two_onsets_during_a_slow_final_decode_lose_no_words():
    words = say("Good morning.") + say("hi", at=3008) + say("There you are.", at=4000)
    h = Harness(words, auto=False)
    held = None
    while h.session.audio_ms < 8000:
        h.step()
        ticket = held or h.ask()
        if ticket is None:
            continue
        if ticket.kind == "eager" and ticket.turn_order == 0 and h.session.audio_ms < 4500:
            held = ticket  # turn 0's closing decode takes 2.8 s (a loaded server)
            continue
        held = None
        h.answer(ticket)
    heard = " ".join(w.text for u in h.ends for w in u.words)
    assert heard == "good morning hi there you are"


# ------------------------------------------------------------------ stale results


def test_a_result_for_an_older_turn_is_ignored():
    h = Harness(HELLO + say("Bye.", at=5024), auto=False)
    h.run_until(ONSET + 320)
    old = h.ask()
    h.answer(old)
    h.run_until(2000)
    h.session.force_endpoint()
    h.answer(h.ask())
    assert h.session.turn_order == 1
    assert h.session.apply(old, h.model(old)) == []


def test_a_partial_for_a_window_that_has_moved_is_ignored():
    h = Harness(HELLO, auto=False)
    h.run_until(ONSET + 320)
    ticket = h.ask()
    h.session._window_start_ms += 100  # a commit happened while it was decoding
    assert h.session.apply(ticket, h.model(ticket)) == []
    assert h.session.in_flight is None


# ------------------------------------------------------------------ noise


def test_a_turn_with_no_words_is_dropped_silently():
    h = Harness(speech=[(ONSET, 2500)], model=silent_model)
    h.run_until(6000)
    assert h.events(SpeechStarted) == [SpeechStarted(0, ONSET)]
    assert h.updates == []
    assert h.session.state is TurnState.IDLE
    assert h.session.turn_order == 0
    assert h.session.idle


def test_after_noise_the_next_real_turn_is_turn_zero():
    noise = (ONSET, 2000)
    words = say("Hello there.", at=5024)

    def model(ticket):
        return oracle(words)(ticket) if ticket.window_end_ms > 5000 else silent_model(ticket)

    h = Harness(words, speech=[noise, *speech_of(words)], model=model)
    h.run_until(9000)
    assert [(u.turn_order, u.text) for u in h.ends] == [(0, "hello there")]


def test_rejected_hypotheses_that_come_back_empty_show_nothing():
    h = Harness(HELLO, model=lambda t: DecodeResult((), "", rejected="no_speech"))
    h.run_until(5000)
    assert h.updates == []


def partials_hear_words_finals_hear_nothing(words: list[Spoken]) -> Model:
    partial_words = oracle(words)

    def model(ticket):  # partials hear words; the final (beam) decode rejects them all
        if ticket.kind == "partial":
            return partial_words(ticket)
        return DecodeResult((), "", rejected="no_speech")

    return model


def test_words_only_partials_heard_are_dropped_when_the_final_decode_after_silence_hears_none():
    heard = partials_hear_words_finals_hear_nothing(HELLO)
    guesses = itertools.count()

    def model(ticket):  # ... and each partial guesses a different word after them
        res = heard(ticket)
        if ticket.kind != "partial":
            return res
        guess = RawWord(
            f"guess{next(guesses)}",
            (ticket.window_end_ms - ticket.window_start_ms) / 1000 - 0.1,
            (ticket.window_end_ms - ticket.window_start_ms) / 1000,
            0.9,
        )
        return DecodeResult((*res.words, guess), f"{res.text} {guess.text}")

    h = Harness(HELLO, model=model)
    h.run_until(SPEECH_END + 2000)  # the speaker stopped; the turn ends by silence
    *shown_before, end = h.updates
    last_partial = [u for u in shown_before if any(not w.final for w in u.words)][-1]
    final_before = [w.text for w in last_partial.words if w.final]
    assert final_before and len(final_before) < len(last_partial.words)
    assert end.end_of_turn and end.turn_order == 0
    # the words only partials heard are dropped; the words already final stay
    assert [w.text for w in end.words] == final_before
    assert all(w.final for w in end.words)
    assert h.session.turn_order == 1


@pytest.mark.parametrize("by_client", [True, False])  # ForceEndpoint; Terminate / end of stream
def test_a_turn_cut_off_mid_speech_keeps_its_partials_when_the_final_decode_hears_nothing(
    by_client,
):
    h = Harness(HELLO, model=partials_hear_words_finals_hear_nothing(HELLO), auto=False)
    h.run_until(1800)
    h.serve()
    shown_words = [w.text for w in h.updates[-1].words]
    assert shown_words and not h.updates[-1].end_of_turn  # the client has seen this turn
    h.session.force_endpoint(by_client=by_client)
    h.serve()
    end = h.updates[-1]
    assert end.end_of_turn and end.turn_order == 0 and end.forced is by_client
    assert [w.text for w in end.words] == shown_words
    assert all(w.final for w in end.words)
    assert h.session.turn_order == 1


# ------------------------------------------------------------------ final words never change


def final_prefix(update: TurnUpdate) -> list[tuple[str, int, int]]:
    return [(w.text, w.start_ms, w.end_ms) for w in update.words if w.final]


def assert_final_words_never_change(updates: list[TurnUpdate]) -> None:
    by_turn: dict[int, list[TurnUpdate]] = {}
    for u in updates:
        if not u.formatted:
            by_turn.setdefault(u.turn_order, []).append(u)
    for order, turn in by_turn.items():
        for before, after in zip(turn, turn[1:], strict=False):
            a, b = final_prefix(before), final_prefix(after)
            assert b[: len(a)] == a, f"turn {order}: {shown(before)!r} -> {shown(after)!r}"
            assert after.final_text.startswith(before.final_text)
            assert [w.final for w in after.words] == sorted(
                (w.final for w in after.words), reverse=True
            )  # final words first, tentative after
        assert [u.end_of_turn for u in turn].count(True) <= 1
        assert not turn[-1].end_of_turn or all(w.final for w in turn[-1].words)


@pytest.mark.parametrize("seed", range(8))
def test_a_final_word_is_never_changed_over_random_hypotheses(seed):
    rng = random.Random(seed)
    words: list[Spoken] = []
    t = ONSET
    for i in range(rng.randint(20, 60)):
        words.append(Spoken(f"w{i}" + ("." if rng.random() < 0.15 else ""), t, t + 200))
        t += rng.choice([250, 300, 350, 300, 900, 1500])  # now and then a pause
    truth = oracle(words)

    def noisy(ticket: DecodeTicket) -> DecodeResult:
        heard = list(truth(ticket).words)
        heard = [
            RawWord(f"x{rng.randint(0, 99)}", w.start, w.end, w.probability)
            if rng.random() < 0.2
            else w
            for w in heard
        ]
        if heard and rng.random() < 0.3:  # the model drops the tail
            heard = heard[: rng.randint(0, len(heard))]
        return DecodeResult(tuple(heard), " ".join(w.text for w in heard))

    h = Harness(words, model=noisy, auto=False)
    pending: DecodeTicket | None = None
    due = 0
    while h.session.audio_ms < t + 3000:
        h.step()
        if pending is None:
            pending = h.ask()
            due = rng.randint(0, 6)  # a decode takes 0 to 6 frames
        if pending is not None:
            if due == 0:
                h.answer(pending)
                pending = None
            else:
                due -= 1
    assert h.ends, "at least one turn ended"
    assert_final_words_never_change(h.updates)


def test_the_end_of_turn_keeps_every_word_already_sent_as_final():
    h = Harness(say("we need to go we need to go now please."))
    h.run_until(7000)
    assert_final_words_never_change(h.updates)
    assert h.ends[0].text == "we need to go we need to go now please"


# ------------------------------------------------------------------ long streams stay bounded


def test_ten_minutes_of_speech_keep_the_buffer_bounded_and_lose_no_word():
    words: list[Spoken] = []
    t = ONSET
    i = 0
    while t < 600_000:  # sentences of 60 words (18 s) with 224 ms breaths between them
        for k in range(60):
            words.append(Spoken(f"w{i}" + ("." if k == 59 else ""), t, t + 250))
            t += 300
            i += 1
        t += 224
    h = Harness(words)
    budget = h.settings.window_budget_ms
    biggest = 0
    while h.session.audio_ms < t + 3000:
        h.step(frames=5)
        biggest = max(biggest, len(h.session._buf))
    assert biggest < (budget / 1000 + 2) * RATE
    assert max(t.window_end_ms - t.window_start_ms for t in h.tickets) <= budget + 1000
    # every word spoken is in exactly one ended turn, in order
    assert [w.text for u in h.ends for w in u.words] == [w.text.rstrip(".") for w in words]
    assert [u.turn_order for u in h.ends] == list(range(len(h.ends)))
    assert all(u.end_ms - u.start_ms <= h.settings.max_turn_ms + 15000 for u in h.ends)


def test_a_window_commit_moves_final_words_into_the_prompt():
    words = say(" ".join(f"w{i}" for i in range(80)))  # 24 s without a pause
    h = Harness(words)
    h.run_until(words[-1].end_ms)
    moved = [t for t in h.tickets if t.window_start_ms > h.tickets[0].window_start_ms]
    assert moved, "the window moved on"
    for ticket in moved:
        before = [w.text for w in words if w.end_ms <= ticket.window_start_ms]
        # the committed words are the prompt, ending with the last word before the window
        assert ticket.request.prompt.split()[-1] == before[-1]
        assert ticket.request.prompt == " ".join(before)[-200:]
        assert len(ticket.request.audio) == (
            (ticket.window_end_ms - ticket.window_start_ms) * RATE // 1000
        )
        assert ticket.request.audio[0] == ticket.window_start_ms * 16
    # the committed words are still part of the turn shown to the client
    assert h.updates[-1].words[0].text == "w0" and h.updates[-1].words[0].final


# ------------------------------------------------------------------ settings


def test_update_settings_rejects_unknown_keys():
    session = StreamingSession(vad_probs=ScriptedVad([]))
    with pytest.raises(ValueError, match="unknown turn settings: max_turn_silence, nonsense"):
        session.update_settings({"max_turn_silence": 1, "nonsense": 2, "min_turn_silence_ms": 5})
    assert session.settings == TurnSettings()  # nothing applied


def test_update_settings_applies_known_keys_and_the_vad_threshold():
    session = StreamingSession(vad_probs=ScriptedVad([]))
    session.update_settings({"max_turn_silence_ms": 2000, "vad_threshold": 0.7})
    assert session.settings.max_turn_silence_ms == 2000
    assert session.vad.threshold == 0.7
    assert session.vad.off_threshold == pytest.approx(0.55)
    session.update_settings({"vad_threshold": 0.1})
    assert session.vad.off_threshold == 0.05


def test_update_settings_mid_turn_takes_effect_for_this_turn():
    h = Harness(HELLO)
    h.run_until(2000)
    h.session.update_settings({"end_of_turn_confidence_threshold": 1.0})
    h.run_until(6000)
    assert h.end_at_ms() == SPEECH_END + 1280


def test_every_setting_a_v3_client_can_send_is_an_engine_setting():
    from streamscribe.protocols.assemblyai_v3 import parse_query, parse_update

    config = parse_query(
        {
            "sample_rate": "16000",
            "format_turns": "true",
            "end_of_turn_confidence_threshold": "0.5",
            "min_turn_silence": "300",
            "max_turn_silence": "900",
            "vad_threshold": "0.4",
            "keyterms_prompt": '["a"]',
            "prompt": "p",
            "language_code": "en",
        }
    )
    settings = TurnSettings().updated(config.turn)
    assert settings.min_turn_silence_ms == 300 and settings.keyterms == ("a",)
    changes = parse_update(
        {
            "type": "UpdateConfiguration",
            "end_of_turn_confidence_threshold": 0.5,
            "min_turn_silence": 300,
            "min_end_of_turn_silence_when_confident": 300,
            "max_turn_silence": 900,
            "vad_threshold": 0.4,
            "format_turns": True,
            "keyterms_prompt": ["a"],
            "prompt": "p",
        }
    )
    StreamingSession(vad_probs=ScriptedVad([])).update_settings(changes)


# ------------------------------------------------------------------ what a v3 client receives


def test_an_engine_stream_renders_as_a_valid_v3_transcript():
    import json

    from assemblyai.streaming.v3 import TurnEvent

    from streamscribe.protocols.assemblyai_v3 import V3Protocol, parse_query

    words = HELLO + say("I am fine, thanks.", at=5024)
    h = Harness(
        words,
        settings=settings(format_turns=True),
        model=oracle(words, language="en", language_probability=0.97),
    )
    h.run_until(10_000)
    proto = V3Protocol(
        parse_query({"sample_rate": "16000", "format_turns": "True", "language_detection": "1"})
    )
    turns = [TurnEvent.model_validate_json(o.text) for u in h.updates for o in proto.render(u)]
    assert [(t.turn_order, t.end_of_turn, t.turn_is_formatted) for t in turns if t.end_of_turn] == [
        (0, True, False),
        (0, True, True),
        (1, True, False),
        (1, True, True),
    ]
    for order in (0, 1):
        unformatted = [t for t in turns if t.turn_order == order and not t.turn_is_formatted]
        transcripts = [t.transcript for t in unformatted]
        assert all(b.startswith(a) for a, b in zip(transcripts, transcripts[1:], strict=False))
        assert unformatted[-1].language_code == "en"
        assert all(t.language_code is None for t in unformatted[:-1])
    assert [t.transcript for t in turns if t.turn_is_formatted] == [
        "Hello world how are you?",
        "I am fine, thanks.",
    ]
    assert json.loads(proto.render(h.updates[0])[0].text)["words"][0]["start"] == ONSET


def test_hypotheses_of_a_very_short_window_never_make_words_final():
    """Words heard in under 1.5 s of audio are shown but wait for a longer window to agree."""
    h = Harness(HELLO, settings=settings(min_final_window_ms=1500))
    h.run_until(6000)
    for update in h.updates:
        if update.end_of_turn or not update.words:
            continue
        window = update.words[-1].end_ms - (ONSET - 400)
        if window < 1400:
            assert not any(w.final for w in update.words), update
    assert shown(h.ends[0]) == "hello* world* how* are* you*"


# ------------------------------------------------------------------ client-forced turns


def test_a_turn_the_client_ends_is_marked_forced_and_the_next_is_not():
    words = say("one two three four five six seven eight")
    h = Harness(words, auto=False)
    h.run_until(2000)
    h.session.force_endpoint(by_client=True)
    end = h.answer(h.ask())[0]
    assert end.end_of_turn and end.forced
    h.auto = True
    h.run_until(words[-1].end_ms + 2000)
    later = [u for u in h.ends if u.turn_order == 1]
    assert later and not later[0].forced  # ended by silence


def test_a_turn_ended_by_silence_or_terminate_is_not_forced():
    h = Harness(HELLO)
    h.run_until(SPEECH_END + 2000)
    assert h.ends and not h.ends[0].forced
    h2 = Harness(HELLO, auto=False)
    h2.run_until(2000)
    h2.session.force_endpoint()  # Terminate / end of stream
    assert not h2.answer(h2.ask())[0].forced


# ------------------------------------------------------------------ languages


def test_partials_reuse_the_turns_detected_language_and_finals_detect_again():
    words = say("eins zwei drei vier fünf sechs sieben acht")
    german = oracle(words, language="de", language_probability=0.9)
    h = Harness(words, model=german)
    h.run_until(words[-1].end_ms + 2000)
    from streamscribe.engine.session import CONFIDENT_DETECTION_MS

    partials = [t for t in h.tickets if t.kind == "partial"]
    # partials detect until one over CONFIDENT_DETECTION_MS of window is confident
    detecting = [t for t in partials if t.request.language is None]
    assert detecting and detecting == partials[: len(detecting)]
    assert all(t.window_end_ms - t.window_start_ms < CONFIDENT_DETECTION_MS for t in detecting[:-1])
    assert detecting[-1].window_end_ms - detecting[-1].window_start_ms >= CONFIDENT_DETECTION_MS
    assert all(t.request.language == "de" for t in partials[len(detecting) :])
    finals = [t for t in h.tickets if t.kind != "partial"]
    assert finals and all(t.request.language is None for t in finals)
    assert h.session.session_language == "de"
    assert h.ends[0].language == "de"


def test_the_session_language_is_the_hint_of_the_next_turns_requests():
    first = say("hallo welt wie geht es?")
    second = say("und noch etwas", at=first[-1].end_ms + 3000)
    h = Harness([*first, *second], model=oracle([*first, *second], language="de"))
    h.run_until(second[-1].end_ms + 2000)
    later = [t for t in h.tickets if t.turn_order == 1]
    assert later and all(t.request.language_hint == "de" for t in later)
    assert all(t.request.switch_confidence == h.settings.language_switch_confidence for t in later)


def test_a_turn_cut_mid_speech_does_not_continue_with_the_old_turns_end_said_again():
    words = say("one two three")  # 1024 .. 1874 ms; the speaker makes noise until 2400
    perfect = oracle(words)

    def model(ticket):
        if ticket.turn_order == 0:
            return perfect(ticket)
        return result(say("two three", at=ticket.window_start_ms + 50), ticket.window_start_ms)

    h = Harness(words, speech=[(ONSET, 2400)], model=model, auto=False)
    h.run_until(2100)
    h.serve()
    h.session.force_endpoint(by_client=True)
    h.serve()
    assert h.ends[0].text == "one two three"
    h.auto = True
    h.run_until(6000)
    later = [u for u in h.ends if u.turn_order >= 1]
    assert all(u.text == "" for u in later), [u.text for u in later]


def test_a_new_turn_after_a_pause_may_repeat_the_last_words():
    first = say("one two three")
    again = say("two three", at=first[-1].end_ms + 2500)  # said again, after a real pause
    h = Harness([*first, *again])
    h.run_until(again[-1].end_ms + 2500)
    assert [u.text for u in h.ends] == ["one two three", "two three"]


# ------------------------------------------------------------------ what each decode asks for


def test_requests_say_how_urgent_and_how_wide_they_are():
    """The first partial and the end-of-speech decode jump the queue of routine partials;
    finals and end-of-speech decodes ask for the accurate encoder window, partials do not."""
    h = Harness(HELLO)
    h.run_until(ONSET + 5000)
    h.session.force_endpoint()
    h.serve()
    kinds = [(t.kind, t.request.urgency, t.request.min_window_s) for t in h.tickets]
    partials = [k for k in kinds if k[0] == "partial"]
    assert partials[0][1] == 1 and all(u == 2 for _, u, _ in partials[1:]), kinds
    assert all(w == 0.0 for _, _, w in partials), kinds
    ending = [k for k in kinds if k[0] in ("eager", "final")]
    assert ending, kinds
    assert all(w == h.settings.final_window_s for _, _, w in ending), kinds
    assert all(u == 1 for k, u, _ in ending if k == "eager"), kinds


def test_under_load_finals_use_short_windows():
    h = Harness(HELLO, settings=settings(busy_rtt_ms=100))
    h.session.note_round_trip(500)
    h.run_until(ONSET + 5000)
    h.session.force_endpoint()
    h.serve()
    assert h.tickets and all(t.request.min_window_s == 0.0 for t in h.tickets)


def ending_windows(note: tuple[float, float]) -> list[tuple[str, int, float]]:
    """(kind, beam, encoder window) of the end-of-speech and final decodes of a turn whose
    decodes came back as `note` says (round trip, model time)."""
    h = Harness(HELLO)
    h.session.note_round_trip(*note)
    h.run_until(ONSET + 5000)
    h.session.force_endpoint()
    h.serve()
    assert all(t.request.min_window_s == 0.0 for t in h.tickets if t.kind == "partial")
    ending = [
        (t.kind, t.request.beam_size, t.request.min_window_s)
        for t in h.tickets
        if t.kind in ("eager", "final")
    ]
    assert ending
    return ending


def test_finals_of_a_session_whose_decodes_wait_in_the_queue_use_the_shorter_window():
    """Decodes that waited 250 ms for a shared model (short of `busy_rtt_ms`): the accurate
    beam stays, the window shrinks from 16 to 10 s."""
    s = TurnSettings()
    assert s.queued_final_window_s < s.final_window_s
    for _, beam, window in ending_windows((400, 150)):
        assert beam == s.final_beam_size and window == s.queued_final_window_s


def test_finals_of_a_session_served_at_once_keep_the_accurate_window():
    s = TurnSettings()
    for note in ((140, 130), (400, 0)):  # no wait; a backend that reports no model time
        assert all(w == s.final_window_s for _, _, w in ending_windows(note)), note


def test_word_times_never_go_backwards_and_final_times_never_change():
    from streamscribe.engine.agreement import HypWord
    from streamscribe.engine.session import in_order

    a, b, c = (
        HypWord("a", 1000, 1300, 1.0),
        HypWord("b", 900, 950, 1.0),
        HypWord("c", 1400, 1500, 1),
    )
    # b lies wholly before a (another hypothesis timed it): it follows a, keeping its length
    assert in_order([a, b, c]) == [(1000, 1300), (1300, 1350), (1400, 1500)]
    # the first words' times depend only on the words before them
    assert in_order([a, b]) == in_order([a, b, c])[:2]
    assert in_order([]) == []
    # a few frames of disagreement: the word starts with the one before it
    slightly = HypWord("d", 980, 1200, 1.0)
    assert in_order([a, slightly]) == [(1000, 1300), (1000, 1200)]


def test_words_a_later_hypothesis_placed_before_the_seam_do_not_stack_on_one_time():
    """Replayed 3331-159605-0002: "of" was final from a partial at 4584-4984 ms, the final
    decode put "that night's" before it; they were sent as 4584-4584 twice."""
    from streamscribe.engine.agreement import HypWord
    from streamscribe.engine.session import MIN_MOVED_WORD_MS, in_order

    words = [
        HypWord("of", 4584, 4984, 0.9),
        HypWord("that", 4300, 4450, 0.9),
        HypWord("night's", 4450, 4450, 0.9),
        HypWord("sleep", 5300, 5600, 0.9),
    ]
    times = in_order(words)
    starts = [s for s, _ in times]
    assert starts == sorted(starts) and len(set(starts)) == len(starts)
    assert all(end > start for start, end in times)
    assert times[1] == (4984, 5134) and times[2] == (5134, 5134 + MIN_MOVED_WORD_MS)
    assert times[3] == (5300, 5600)  # a word after the seam keeps its own time


def test_under_load_partial_windows_shrink_to_half_the_budget():
    words = say(" ".join(f"w{i}" for i in range(80)))  # 24 s without a pause
    h = Harness(words, settings=settings(busy_rtt_ms=100, window_budget_ms=20000))
    h.session.note_round_trip(500)  # decodes take 500 ms: the server is loaded
    h.run_until(words[-1].end_ms)
    partials = [t for t in h.tickets if t.kind == "partial"]
    assert max(t.window_end_ms - t.window_start_ms for t in partials) <= 10000 + 1000
    unloaded = Harness(words, settings=settings(window_budget_ms=20000))
    unloaded.run_until(words[-1].end_ms)
    widest = max(t.window_end_ms - t.window_start_ms for t in unloaded.tickets)
    assert widest > 15000  # without load the window grows to the budget


def test_a_session_behind_under_load_catches_up_in_bounded_windows():
    """Under load, a backlog is decoded oldest first in catch-up windows, so no decode of a
    lagging session is longer than CATCH_UP_AFTER_MS, and every word still ends final once."""
    from streamscribe.engine.session import CATCH_UP_AFTER_MS, CATCH_UP_WINDOW_MS

    words = say(" ".join(f"w{i}" for i in range(80)) + ".")  # 24 s without a pause
    h = Harness(words, settings=settings(busy_rtt_ms=100), auto=False)
    h.session.note_round_trip(5000)  # decodes take 5 s: the server is loaded
    h.run_until(20000)  # 19 s of speech and no decode answered yet
    served = 0
    while h.session.audio_ms < words[-1].end_ms + 3000:
        h.serve()
        served += 1
        h.run_until(h.session.audio_ms + 2000)  # the next decode comes 2 s of audio later
    h.serve()
    catch_ups = [t for t in h.tickets if t.kind == "catchup"]
    assert catch_ups, h.kinds
    assert all(t.window_end_ms - t.window_start_ms == CATCH_UP_WINDOW_MS for t in catch_ups)
    assert max(t.window_end_ms - t.window_start_ms for t in h.tickets) <= CATCH_UP_AFTER_MS
    # the windows cover the stream in order, each catch-up starting where the last one's
    # heard words ended
    starts = [t.window_start_ms for t in h.tickets]
    assert starts == sorted(starts)
    # every word ended final once, in order, and words shown final were never taken back
    assert [w.text for u in h.ends for w in u.words] == [w.text.rstrip(".") for w in words]
    shown_final: list[str] = []
    for u in h.updates:
        if u.formatted:
            continue
        finals = [w.text for w in u.words if w.final]
        assert finals[: len(shown_final)] == shown_final
        shown_final = [] if u.end_of_turn else finals


def test_without_load_a_backlog_is_one_growing_window():
    words = say(" ".join(f"w{i}" for i in range(40)) + ".")  # 12 s without a pause
    h = Harness(words, auto=False)  # PINNED: never under load
    h.run_until(11000)
    h.run_until(words[-1].end_ms + 3000, frames=1)
    h.serve()
    h.run_until(words[-1].end_ms + 4000)
    h.serve()
    assert "catchup" not in h.kinds
    assert [w.text for u in h.ends for w in u.words] == [w.text.rstrip(".") for w in words]


def test_under_load_a_session_that_kept_up_decodes_its_end_in_one_final():
    """Catching up is for a backlog: a loaded session whose partials covered its audio gets one
    final decode of the turn, not an extra catch-up round trip first."""
    words = say(" ".join(f"w{i}" for i in range(40)) + ".")  # 12 s without a pause
    h = Harness(words, settings=settings(busy_rtt_ms=100, window_budget_ms=40000))
    h.session.note_round_trip(500)  # loaded, but every decode is answered at once here
    h.run_until(words[-1].end_ms + 2000)
    assert h.ends, h.kinds
    assert "catchup" not in h.kinds
    assert h.kinds[-1] in ("final", "eager")
    assert [w.text for u in h.ends for w in u.words] == [w.text.rstrip(".") for w in words]


def test_a_pause_makes_the_queued_partial_give_way_to_the_end_of_speech_decode():
    h = Harness(HELLO, auto=False)
    h.run_until(2000)
    partial = h.ask()
    assert partial is not None and partial.kind == "partial"
    assert not h.session.wants_sooner()  # still speaking: the partial is what is due
    h.run_until(SPEECH_END + 200)  # the speaker paused while the partial waited
    assert h.session.wants_sooner()
    h.session.release(partial)  # the runner withdrew it from the scheduler
    eager = h.ask()
    assert eager is not None and eager.kind == "eager"
    assert eager.window_end_ms >= SPEECH_END
    assert not h.session.wants_sooner()  # an end-of-speech decode is never withdrawn


# ------------------------------------------------------------------ bound late (refresh)


def test_a_partial_that_waited_in_the_queue_hears_the_audio_that_came_meanwhile():
    h = Harness(HELLO, auto=False)
    h.run_until(1600)
    partial = h.ask()
    assert partial is not None and partial.kind == "partial"
    asked_end = partial.window_end_ms
    h.run_until(2200)  # the partial waits in the queue while the speaker goes on
    request = h.session.refresh(partial)
    assert partial.window_end_ms == h.session.audio_ms > asked_end
    # the audio decoded is the window up to now (sample values are stream positions)
    assert request is partial.request
    assert len(request.audio) == (partial.window_end_ms - partial.window_start_ms) * RATE // 1000
    assert request.audio[-1] == partial.window_end_ms * RATE // 1000 - 1
    events = h.answer(partial)
    assert "are" in shown(events[-1])  # heard after the partial was asked for
    assert h.session.lag_ms == 0
    # the cadence still counts from when the partial was asked: the next one is not later
    h.run_until(asked_end + 500)
    nxt = h.ask()
    assert nxt is not None and nxt.kind == "partial"


def test_a_partial_is_not_extended_into_a_pause_that_began_while_it_waited():
    h = Harness(HELLO, auto=False)
    h.run_until(2000)
    partial = h.ask()
    assert partial is not None
    asked_end = partial.window_end_ms
    h.run_until(SPEECH_END + 128)  # the VAD heard the speaker pause (after 96 ms)
    h.session.refresh(partial)
    assert partial.window_end_ms == asked_end
    h.answer(partial)
    eager = h.ask()  # the pause still gets its end-of-speech decode with the final beam
    assert eager is not None and eager.kind == "eager"


def test_a_partial_refreshed_past_the_speech_end_still_leaves_the_pause_its_final_beam():
    h = Harness(HELLO, auto=False)
    h.run_until(2000)
    partial = h.ask()
    assert partial is not None
    h.run_until(SPEECH_END + 64)  # silence, but too short yet for the VAD to end the speech
    h.session.refresh(partial)
    assert partial.window_end_ms == SPEECH_END + 64
    h.answer(partial)
    h.run_until(SPEECH_END + 128)
    eager = h.ask()
    assert eager is not None and eager.kind == "eager" and eager.request.beam_size == 5


def test_only_a_routine_partial_still_in_flight_is_refreshed():
    h = Harness(HELLO, auto=False)
    h.run_until(SPEECH_END + 200)
    eager = h.ask()
    assert eager is not None and eager.kind == "eager"
    end = eager.window_end_ms
    h.run_until(SPEECH_END + 600)
    assert h.session.refresh(eager) is eager.request and eager.window_end_ms == end
    h.answer(eager)
    h2 = Harness(HELLO, auto=False)
    h2.run_until(1600)
    stale = h2.ask()
    assert stale is not None
    asked_end = stale.window_end_ms
    h2.session.release(stale)  # superseded: no longer the session's decode in flight
    h2.run_until(2000)
    assert h2.session.refresh(stale) is stale.request and stale.window_end_ms == asked_end


QUEUED = (400, 150)  # decodes that waited 250 ms in a shared queue (short of busy_rtt_ms)


def first_eager(h: Harness, until_ms: int) -> DecodeTicket | None:
    """Step to `until_ms`, answering partials; the first end-of-speech decode asked for."""
    while h.session.audio_ms < until_ms:
        h.step()
        ticket = h.ask()
        if ticket is not None and ticket.kind == "eager":
            return ticket
        if ticket is not None:
            h.answer(ticket)
    return None


def test_a_queued_session_asks_for_the_end_of_speech_decode_only_after_its_silence_wait():
    h = Harness(HELLO, auto=False, settings=settings(queued_eager_silence_ms=200))
    h.session.note_round_trip(*QUEUED)
    eager = first_eager(h, SPEECH_END + 1000)
    assert eager is not None
    # the VAD ends speech after 96 ms; the decode waits for 200 ms of silence (a frame more)
    assert SPEECH_END + 200 <= h.session.audio_ms < SPEECH_END + 200 + FRAME_MS
    assert eager.window_end_ms == h.session.audio_ms  # it hears the whole pause so far
    assert eager.request.beam_size == h.settings.final_beam_size


def test_a_slow_decode_that_did_not_wait_in_a_queue_is_no_load():
    """One stream with a 20 s window: its decodes take 800 ms of model time and wait for
    nothing; the load path (greedy finals, halved windows) is for a shared, busy model."""
    session = StreamingSession(settings=TurnSettings(), vad_probs=ScriptedVad([]))
    session.note_round_trip(820, 800)
    assert not session.under_load
    queued = StreamingSession(settings=TurnSettings(), vad_probs=ScriptedVad([]))
    queued.note_round_trip(820, 300)  # 520 ms of it in the queue
    assert queued.under_load
    unknown = StreamingSession(settings=TurnSettings(), vad_probs=ScriptedVad([]))
    unknown.note_round_trip(820)  # a backend that reports no model time: the round trip decides
    assert unknown.under_load


def test_the_silence_wait_is_for_queued_sessions_only():
    h = Harness(HELLO, auto=False, settings=settings(queued_eager_silence_ms=200))
    h.session.note_round_trip(140, 130)  # served at once: the end of speech is decoded at once
    assert first_eager(h, SPEECH_END + 1000) is not None
    assert h.session.audio_ms == SPEECH_END + 96


def test_a_queued_partial_is_not_withdrawn_before_the_end_of_speech_decode_is_due():
    """Withdrawing it at the VAD's end of speech would leave the speech before the pause
    undecoded until the wait is over, and longer if the speaker goes on."""
    h = Harness(HELLO, settings=settings(queued_eager_silence_ms=200))
    h.session.note_round_trip(*QUEUED)
    h.run_until(1600)  # partials come back at once: the session is not behind
    h.auto = False
    partial = None
    while partial is None and h.session.audio_ms < SPEECH_END:
        h.step()
        partial = h.ask()
    assert partial is not None and partial.kind == "partial"
    h.run_until(SPEECH_END + 100)  # the VAD has ended the speech
    assert not h.session.vad.state.in_speech
    assert not h.session.wants_sooner()
    h.run_until(SPEECH_END + 200)
    assert h.session.wants_sooner()


def test_a_pause_shorter_than_the_silence_wait_costs_no_end_of_speech_decode():
    words = say("Hello there my", at=ONSET) + say("friend how are you?", at=ONSET + 970)
    # a 110 ms pause: the VAD ends the speech (96 ms) and hears it again 64 ms later
    speech = [(ONSET, ONSET + 850), (ONSET + 960, words[-1].end_ms)]
    h = Harness(words, speech=speech, settings=settings(queued_eager_silence_ms=250))
    h.session.note_round_trip(*QUEUED)
    h.run_until(words[-1].end_ms + 2000)
    eagers = [t for t in h.tickets if t.kind == "eager"]
    assert len(eagers) == 1 and eagers[0].window_end_ms > words[-1].end_ms  # the turn's end only
    heard = [w.text.lower().strip("?") for u in h.ends for w in u.words]
    assert heard == [w.text.lower().strip("?") for w in words]


def test_a_word_whisper_starts_in_the_silence_before_it_starts_at_the_vad_onset():
    """Whisper gives the first word of a window the pre-roll before it, and a word after a
    pause the pause: the session moves such starts to where the VAD heard the speech begin."""
    from streamscribe.engine.word_timing import ONSET_MARGIN_MS

    words = say("Hello there.", at=ONSET) + say("How are you?", at=ONSET + 2048)

    def early(ticket: DecodeTicket) -> DecodeResult:
        heard = [w for w in words if ticket.window_start_ms - 50 <= w.start_ms]
        heard = [w for w in heard if w.end_ms <= ticket.window_end_ms]
        # like Whisper: the first word reaches back to the window's start, a word after a
        # pause reaches 300 ms back into it
        stretched = [
            Spoken(
                w.text,
                ticket.window_start_ms
                if i == 0
                else (w.start_ms - 300 if w.start_ms - heard[i - 1].end_ms > 500 else w.start_ms),
                w.end_ms,
            )
            for i, w in enumerate(heard)
        ]
        return result(stretched, ticket.window_start_ms)

    h = Harness(
        words, model=early, settings=settings(min_turn_silence_ms=3000, max_turn_silence_ms=5000)
    )
    h.run_until(words[-1].end_ms + 3000)
    (turn,) = h.ends
    starts = [w.start_ms for w in turn.words]
    assert starts[0] == ONSET - ONSET_MARGIN_MS  # not the window start, 400 ms before
    assert starts[2] == ONSET + 2048 - ONSET_MARGIN_MS  # "how", after the pause
    assert starts[1] == ONSET + 300 and starts[3] == ONSET + 2348  # words inside speech stay


def test_the_words_before_a_pause_become_final_with_the_end_of_speech_decode():
    """No partial runs during a pause, so LocalAgreement's second hypothesis of the last words
    would come only once the speaker resumes: the end-of-speech decode makes them final."""
    words = say("so I was thinking", at=ONSET) + say("that we could go.", at=ONSET + 1500 + 200)
    h = Harness(words, settings=settings(min_turn_silence_ms=2000, max_turn_silence_ms=3000))
    pause_end = ONSET + 1700
    h.run_until(pause_end - 100)  # in the pause, before the speech resumes
    assert h.kinds[-1] == "eager"
    assert shown(h.updates[-1]) == "so* i* was* thinking*"
    h.run_until(8000)
    assert len(h.ends) == 1
    assert shown(h.ends[0]) == "so* i* was* thinking* that* we* could* go*"


def test_a_short_window_end_of_speech_decode_finalizes_nothing():
    """A pause after under `min_final_window_ms` of window keeps the words tentative."""
    words = say("yes sure", at=ONSET) + say("I think so.", at=ONSET + 1400)
    h = Harness(words, settings=settings(min_final_window_ms=1500, max_turn_silence_ms=3000))
    h.run_until(ONSET + 1300)
    eager = h.tickets[-1]
    assert eager.kind == "eager" and eager.window_end_ms - eager.window_start_ms < 1500
    assert shown(h.updates[-1]) == "yes sure"


def test_a_language_detected_over_a_short_window_makes_no_word_final():
    """tiny and base can be confidently wrong about the language over the first second (German
    read as Chinese): until a detection is trusted, partials keep detecting and their words stay
    tentative, even when two of them agree."""
    from streamscribe.engine.session import CONFIDENT_DETECTION_MS

    words = say("eins zwei drei vier fünf sechs sieben acht")
    chinese = oracle(words, language="zh", language_probability=0.95)
    h = Harness(words, model=chinese, settings=settings(min_final_window_ms=500))
    h.run_until(ONSET - 400 + CONFIDENT_DETECTION_MS - 100)
    partials = [t for t in h.tickets if t.kind == "partial"]
    assert len(partials) >= 2 and all(t.request.language is None for t in partials)
    assert h.updates and not any(w.final for u in h.updates for w in u.words)


def test_an_english_only_model_makes_words_final_over_a_short_window():
    """A result whose language has no probability was not detected (an English-only model, or
    a pinned language): nothing was guessed, so two agreeing partials over a window under
    `CONFIDENT_DETECTION_MS` make words final, and the partials are not pinned to a language."""
    from streamscribe.engine.session import CONFIDENT_DETECTION_MS

    words = say("so I was thinking that we could go to the park")
    english = oracle(words, language="en", language_probability=None)
    h = Harness(words, model=english, settings=settings(min_final_window_ms=500))
    h.run_until(ONSET - 400 + CONFIDENT_DETECTION_MS - 100)
    partials = [t for t in h.tickets if t.kind == "partial"]
    assert len(partials) >= 2 and all(t.request.language is None for t in partials)
    assert any(w.final for u in h.updates for w in u.words)


def test_confident_words_well_inside_the_window_are_final_on_one_hypothesis():
    """With `settle_margin_ms`, a partial's words that end that far before its window end,
    each as confident as `settle_confidence`, are final at once; words nearer the edge wait
    for agreement. Below the confidence only agreement makes words final."""
    words = say("so I was thinking that we could go to the park")
    h = Harness(words, settings=settings(settle_margin_ms=100, settle_confidence=0.9))
    h.run_until(ONSET + 1400)
    assert len(h.updates) == len(h.tickets) == 3
    for ticket, update in zip(h.tickets, h.updates, strict=True):
        edge = ticket.window_end_ms - 100
        assert [w.final for w in update.words] == [w.end_ms <= edge for w in update.words]
    assert shown(h.updates[1]) == "so* i*"  # "I" on one hypothesis, "so" ended too late
    unsure = Harness(words, settings=settings(settle_margin_ms=100, settle_confidence=0.95))
    unsure.run_until(ONSET + 1400)
    assert shown(unsure.updates[1]) == "so* i"  # "so" by agreement only
