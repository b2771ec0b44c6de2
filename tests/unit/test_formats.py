"""Exact output of every transcript format for a small list of turns."""

from __future__ import annotations

import json

import pytest

from streamscribe.events import TurnUpdate, Word
from streamscribe.formats import (
    FORMATS,
    cues,
    speaker_name,
    srt_timestamp,
    to_json,
    to_srt,
    to_txt,
    to_vtt,
    vtt_timestamp,
    wrap_lines,
)


def w(text: str, start: int, end: int, final: bool = True, speaker: str | None = None) -> Word:
    return Word(text, start, end, 0.9, final, speaker)


NUMBERS = ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
TURNS = [
    TurnUpdate(0, 0, (w("Hello", 500, 900), w("world.", 950, 1400)), True, True),
    # 9 words over 8.4 s: split at 7 s, and the first cue wraps onto two lines
    TurnUpdate(
        0,
        1,
        tuple(w(x, 2000 + i * 1000, 2400 + i * 1000) for i, x in enumerate(NUMBERS)),
        True,
        True,
        speaker="A",
    ),
    # 12 words of 10 characters in 2.4 s: split at 84 characters; the tentative word is left out
    TurnUpdate(
        0,
        2,
        tuple(w(f"lengthy{i:02d}", 11000 + i * 200, 11150 + i * 200) for i in range(12))
        + (w("maybe", 13500, 13700, final=False),),
        False,
    ),
    TurnUpdate(
        0,
        3,
        (w("Fish", 14000, 14300), w("&", 14300, 14400), w("<chips>", 14400, 15000)),
        True,
        True,
        speaker="B",
    ),
]

EXPECTED_SRT = """\
1
00:00:00,500 --> 00:00:01,400
Hello world.

2
00:00:02,000 --> 00:00:08,400
Speaker A: one two three
four five six seven

3
00:00:09,000 --> 00:00:10,400
Speaker A: eight nine

4
00:00:11,000 --> 00:00:12,550
lengthy00 lengthy01 lengthy02 lengthy03
lengthy04 lengthy05 lengthy06 lengthy07

5
00:00:12,600 --> 00:00:13,350
lengthy08 lengthy09 lengthy10 lengthy11

6
00:00:14,000 --> 00:00:15,000
Speaker B: Fish & <chips>
"""

EXPECTED_VTT = """\
WEBVTT

00:00:00.500 --> 00:00:01.400
Hello world.

00:00:02.000 --> 00:00:08.400
<v Speaker A>one two three four five six seven

00:00:09.000 --> 00:00:10.400
<v Speaker A>eight nine

00:00:11.000 --> 00:00:12.550
lengthy00 lengthy01 lengthy02 lengthy03
lengthy04 lengthy05 lengthy06 lengthy07

00:00:12.600 --> 00:00:13.350
lengthy08 lengthy09 lengthy10 lengthy11

00:00:14.000 --> 00:00:15.000
<v Speaker B>Fish &amp; &lt;chips&gt;
"""

EXPECTED_TXT = """\
Hello world.
Speaker A: one two three four five six seven eight nine
lengthy00 lengthy01 lengthy02 lengthy03 lengthy04 lengthy05 lengthy06 lengthy07 lengthy08 \
lengthy09 lengthy10 lengthy11
Speaker B: Fish & <chips>
"""


def test_srt_exact() -> None:
    assert to_srt(TURNS) == EXPECTED_SRT


def test_vtt_exact() -> None:
    assert to_vtt(TURNS) == EXPECTED_VTT


def test_txt_exact() -> None:
    assert to_txt(TURNS) == EXPECTED_TXT


def test_json_holds_turns_and_words() -> None:
    doc = json.loads(to_json(TURNS))
    assert doc["text"].startswith("Hello world. one two")
    assert [t["turn_order"] for t in doc["turns"]] == [0, 1, 2, 3]
    first = doc["turns"][0]
    assert first == {
        "turn_order": 0,
        "channel": 0,
        "speaker": None,
        "start_ms": 500,
        "end_ms": 1400,
        "text": "Hello world.",
        "language": None,
        "language_confidence": None,
        "words": [
            {"text": "Hello", "start_ms": 500, "end_ms": 900, "confidence": 0.9, "speaker": None},
            {"text": "world.", "start_ms": 950, "end_ms": 1400, "confidence": 0.9, "speaker": None},
        ],
    }
    assert doc["turns"][1]["speaker"] == "A"
    assert "maybe" not in doc["text"]  # tentative words are not part of a transcript


def test_cue_limits_hold() -> None:
    for cue in cues(TURNS):
        assert cue.end_ms - cue.start_ms <= 7000
        assert len(cue.text) <= 84


def test_empty_inputs() -> None:
    assert to_srt([]) == ""
    assert to_vtt([]) == "WEBVTT\n"
    assert to_txt([]) == ""
    assert json.loads(to_json([])) == {"text": "", "turns": []}
    empty_turn = TurnUpdate(0, 0, (), True)
    assert to_srt([empty_turn]) == "" and to_txt([empty_turn]) == ""


def test_turn_without_final_words_is_taken_whole() -> None:
    turn = TurnUpdate(0, 0, (w("only", 0, 300, final=False), w("partial", 300, 700, False)), False)
    assert to_txt([turn]) == "only partial\n"


@pytest.mark.parametrize(
    ("ms", "srt", "vtt"),
    [
        (0, "00:00:00,000", "00:00:00.000"),
        (1234, "00:00:01,234", "00:00:01.234"),
        (3_723_004, "01:02:03,004", "01:02:03.004"),
        (-5, "00:00:00,000", "00:00:00.000"),
    ],
)
def test_timestamps(ms: int, srt: str, vtt: str) -> None:
    assert srt_timestamp(ms) == srt
    assert vtt_timestamp(ms) == vtt


def test_wrap_lines_balances() -> None:
    assert wrap_lines("short line") == ["short line"]
    assert wrap_lines("a" * 50) == ["a" * 50]  # no space: cannot wrap
    assert wrap_lines("aaaa bbbb cccc dddd eeee ffff gggg hhhh iiii") == [
        "aaaa bbbb cccc dddd",
        "eeee ffff gggg hhhh iiii",
    ]


def test_speaker_name() -> None:
    assert speaker_name("A") == "Speaker A"
    assert speaker_name("Speaker 2") == "Speaker 2"


def test_formats_registry() -> None:
    assert set(FORMATS) == {"txt", "srt", "vtt", "json"}
    assert FORMATS["srt"] is to_srt
