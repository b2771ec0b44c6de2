"""Transcript file formats: plain text, SubRip (SRT), WebVTT and JSON, from final turns.

Why this exists: `streamscribe transcribe` and SDK users turn a finished transcript (a sequence
of `TurnUpdate`, one per final turn) into a file people open in players and editors. These are
pure functions of the turns: no I/O, no model, nothing imported but the event model, so each
format is pinned by exact-text unit tests.

Subtitle rules: a cue never spans more than `MAX_CUE_MS` (7 s) or `MAX_CUE_CHARS` (84 characters,
two lines of 42) of text; long turns are split on word boundaries, and a cue over one line is
wrapped into two balanced lines. Cue times come from the words' own times. A turn's speaker (if
diarized) prefixes its text ("Speaker A: ..." in SRT/TXT, a `<v Speaker A>` voice span in VTT).
Only final words are used; a turn with no final words is taken whole.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from streamscribe.events import TurnUpdate, Word

MAX_CUE_MS = 7000
MAX_CUE_CHARS = 84
MAX_LINE_CHARS = 42


@dataclass(frozen=True, slots=True)
class Cue:
    """One subtitle: text shown from `start_ms` to `end_ms`, said by `speaker` (or unknown)."""

    start_ms: int
    end_ms: int
    text: str
    speaker: str | None = None


def speaker_name(label: str) -> str:
    """Display name of a diarization label: "A" -> "Speaker A"; "Speaker 2" stays as it is."""
    return label if "speaker" in label.lower() else f"Speaker {label}"


def _words(turn: TurnUpdate) -> list[Word]:
    final = [w for w in turn.words if w.final and w.text.strip()]
    return final or [w for w in turn.words if w.text.strip()]


def _join(words: Sequence[Word]) -> str:
    return " ".join(w.text.strip() for w in words)


def turn_text(turn: TurnUpdate) -> str:
    """The turn's text: its final (formatted, when the turn is) words, space-joined."""
    return _join(_words(turn))


def cues(
    turns: Sequence[TurnUpdate], max_ms: int = MAX_CUE_MS, max_chars: int = MAX_CUE_CHARS
) -> list[Cue]:
    """Split turns into subtitle cues (see the module docstring), ordered by start time."""
    out: list[Cue] = []
    for turn in turns:
        speaker = turn.speaker
        group: list[Word] = []
        for word in _words(turn):
            if group:
                too_long = len(_join([*group, word])) > max_chars
                too_late = word.end_ms - group[0].start_ms > max_ms
                if too_long or too_late:
                    out.append(_cue(group, speaker))
                    group = []
            group.append(word)
        if group:
            out.append(_cue(group, speaker))
    return sorted(out, key=lambda c: c.start_ms)


def _cue(words: Sequence[Word], speaker: str | None) -> Cue:
    start = max(0, words[0].start_ms)
    return Cue(start, max(start, words[-1].end_ms), _join(words), speaker)


def wrap_lines(text: str, max_line: int = MAX_LINE_CHARS) -> list[str]:
    """One line if it fits in `max_line`, else two lines split at the most balanced space."""
    if len(text) <= max_line or " " not in text:
        return [text]
    spaces = [i for i, ch in enumerate(text) if ch == " "]
    cut = min(spaces, key=lambda i: (max(i, len(text) - i - 1), i))
    return [text[:cut], text[cut + 1 :]]


def _timestamp(ms: int, separator: str) -> str:
    ms = max(0, int(ms))
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    seconds, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{seconds:02d}{separator}{millis:03d}"


def srt_timestamp(ms: int) -> str:
    """`HH:MM:SS,mmm`, as SubRip writes times."""
    return _timestamp(ms, ",")


def vtt_timestamp(ms: int) -> str:
    """`HH:MM:SS.mmm`, as WebVTT writes times."""
    return _timestamp(ms, ".")


def to_txt(turns: Sequence[TurnUpdate]) -> str:
    """One line per turn, prefixed with the speaker's name when known."""
    lines = []
    for turn in turns:
        text = turn_text(turn)
        if not text:
            continue
        lines.append(f"{speaker_name(turn.speaker)}: {text}" if turn.speaker else text)
    return "".join(line + "\n" for line in lines)


def to_srt(turns: Sequence[TurnUpdate]) -> str:
    """SubRip subtitles: numbered cues, `00:00:01,234 --> 00:00:02,345`, blank-line separated."""
    blocks = []
    for index, cue in enumerate(cues(turns), start=1):
        text = f"{speaker_name(cue.speaker)}: {cue.text}" if cue.speaker else cue.text
        timing = f"{srt_timestamp(cue.start_ms)} --> {srt_timestamp(cue.end_ms)}"
        blocks.append("\n".join([str(index), timing, *wrap_lines(text)]) + "\n")
    return "\n".join(blocks)


def _vtt_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def to_vtt(turns: Sequence[TurnUpdate]) -> str:
    """WebVTT subtitles: `WEBVTT` header, `00:00:01.234 --> 00:00:02.345` cues, voice spans."""
    blocks = ["WEBVTT\n"]
    for cue in cues(turns):
        lines = [_vtt_escape(line) for line in wrap_lines(cue.text)]
        if cue.speaker:
            lines[0] = f"<v {_vtt_escape(speaker_name(cue.speaker))}>{lines[0]}"
        timing = f"{vtt_timestamp(cue.start_ms)} --> {vtt_timestamp(cue.end_ms)}"
        blocks.append("\n".join([timing, *lines]) + "\n")
    return "\n".join(blocks)


def to_json(turns: Sequence[TurnUpdate]) -> str:
    """The whole transcript with every turn and word (times in milliseconds), as JSON text."""
    items = []
    for turn in turns:
        words = _words(turn)
        if not words:
            continue
        items.append(
            {
                "turn_order": turn.turn_order,
                "channel": turn.channel,
                "speaker": turn.speaker,
                "start_ms": words[0].start_ms,
                "end_ms": words[-1].end_ms,
                "text": _join(words),
                "language": turn.language,
                "language_confidence": turn.language_confidence,
                **({"translation": turn.translation} if turn.translation is not None else {}),
                "words": [
                    {
                        "text": w.text.strip(),
                        "start_ms": w.start_ms,
                        "end_ms": w.end_ms,
                        "confidence": w.confidence,
                        "speaker": w.speaker,
                    }
                    for w in words
                ],
            }
        )
    document = {"text": " ".join(item["text"] for item in items), "turns": items}
    return json.dumps(document, ensure_ascii=False, indent=2) + "\n"


FORMATS: dict[str, Callable[[Sequence[TurnUpdate]], str]] = {
    "txt": to_txt,
    "srt": to_srt,
    "vtt": to_vtt,
    "json": to_json,
}
