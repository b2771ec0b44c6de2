"""Durable transcripts, the simple way: one append-only JSON-lines file per session.

Every final turn is appended (and flushed) the moment it becomes final, so a crash loses at most
the turn in progress. The session's opening line records its parameters, the closing line its
end reason and durations. (The SQL store of the platform work replaces this behind the same calls.)
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from streamscribe.events import SessionEnded, TurnUpdate


class TranscriptLog:
    def __init__(self, data_dir: Path) -> None:
        self.dir = Path(data_dir) / "sessions"
        self.dir.mkdir(parents=True, exist_ok=True)

    def path(self, session_id: str) -> Path:
        return self.dir / f"{session_id}.jsonl"

    def _append(self, session_id: str, record: dict[str, Any]) -> None:
        with self.path(session_id).open("a", encoding="utf-8") as f:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
            f.flush()

    def open(self, session_id: str, protocol: str, params: dict[str, Any]) -> None:
        self._append(
            session_id,
            {"kind": "session", "protocol": protocol, "params": params, "started": time.time()},
        )

    def turn(self, session_id: str, update: TurnUpdate) -> None:
        self._append(
            session_id,
            {
                "kind": "turn",
                "channel": update.channel,
                "turn_order": update.turn_order,
                "formatted": update.formatted,
                "text": update.text,
                "language": update.language,
                "speaker": update.speaker,
                "words": [
                    [w.text, w.start_ms, w.end_ms, round(w.confidence, 4)] for w in update.words
                ],
            },
        )

    def close(self, session_id: str, ended: SessionEnded) -> None:
        self._append(
            session_id,
            {
                "kind": "end",
                "reason": str(ended.reason),
                "audio_ms": ended.audio_ms,
                "session_ms": ended.session_ms,
                "ended": time.time(),
            },
        )

    def read(self, session_id: str) -> list[dict[str, Any]]:
        p = self.path(session_id)
        if not p.exists():
            return []
        return [json.loads(line) for line in p.read_text(encoding="utf-8").splitlines() if line]
