"""`TranscriptView`: a live transcript in the terminal, fed with `Turn` messages.

Why this exists: watching a transcript form is the quickest way to judge a streaming server, and
the CLI's `mic` and `stream` commands (and SDK users' own scripts) need the same display. The view
keeps one line per ended turn in the terminal's scrollback and a small live area below it with the
turn in progress: words that will not change in bold, tentative words dim. With `format_turns`
an ended turn waits in the live area until its formatted re-send arrives and is then printed
in its final, punctuated form; a newer turn (or `finish()`) flushes it as it is.

It is a Rich renderable: pass it to `rich.live.Live` and feed it from any thread; printing and
rendering share a lock. Nothing here knows about sockets.
"""

from __future__ import annotations

import threading

from rich.console import Console, Group, RenderableType
from rich.text import Text

from streamscribe.client.messages import Turn

SPEAKER_STYLE = "cyan"


class TranscriptView:
    """Scrollback lines for ended turns plus a live area for the turn in progress."""

    def __init__(self, console: Console, format_turns: bool = True) -> None:
        self.console = console
        self.format_turns = format_turns
        self.status = ""
        self.lines_printed = 0
        self._lock = threading.RLock()
        self._current: Turn | None = None
        self._pending: dict[int, Turn] = {}  # ended, waiting for the formatted re-send
        self._done: set[int] = set()

    def update(self, turn: Turn) -> None:
        """Take one Turn message (from any thread)."""
        with self._lock:
            order = turn.turn_order
            if order in self._done:
                return
            for older in sorted(o for o in self._pending if o < order):
                self._print(self._pending.pop(older))
            if self._current is not None and self._current.turn_order <= order:
                self._current = None
            if not turn.end_of_turn:
                self._current = turn
            elif turn.turn_is_formatted or not self.format_turns:
                self._pending.pop(order, None)
                self._print(turn)
            else:
                self._pending[order] = turn

    def finish(self) -> None:
        """Print every turn still shown in the live area (call before the Live display ends)."""
        with self._lock:
            for order in sorted(self._pending):
                self._print(self._pending.pop(order))
            if self._current is not None:
                self._print(self._current)
                self._current = None
            self.status = ""

    def _print(self, turn: Turn) -> None:
        self._done.add(turn.turn_order)
        text = turn.transcript.strip() or " ".join(w.text for w in turn.words)
        if not text:
            return
        line = _speaker(turn)
        line.append(text)
        self.console.print(line)
        self.lines_printed += 1

    def __rich__(self) -> RenderableType:
        with self._lock:
            parts: list[RenderableType] = []
            for order in sorted(self._pending):
                turn = self._pending[order]
                parts.append(_speaker(turn).append(turn.transcript))
            if self._current is not None:
                parts.append(render_turn(self._current))
            if self.status:
                parts.append(Text(self.status, style="dim italic"))
            return Group(*parts)


def _speaker(turn: Turn) -> Text:
    if not turn.speaker_label:
        return Text()
    label = turn.speaker_label
    name = label if "speaker" in label.lower() else f"Speaker {label}"
    return Text(f"{name}: ", style=SPEAKER_STYLE)


def render_turn(turn: Turn) -> Text:
    """A turn in progress: final words bold, tentative words dim."""
    text = _speaker(turn)
    for i, word in enumerate(turn.words):
        if i:
            text.append(" ")
        text.append(word.text, style="bold" if word.word_is_final else "dim")
    return text
