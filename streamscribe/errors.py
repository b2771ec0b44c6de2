"""Error types shared by every layer.

StreamscribeError
├── ProtocolError      a client broke its wire protocol; carries the Error kind and a reason
│                      that names the fix. Each dialect maps the kind to its own close code.
├── ModelNotFoundError a model name or directory could not be resolved; names the fix
├── AudioDecodeError   a file or stream could not be decoded
└── SpeakerModelUnavailableError  speaker labels were asked for without the `speakers` extra
"""

from __future__ import annotations

from streamscribe.events import ErrorKind


class StreamscribeError(Exception):
    """Base of every error streamscribe raises on purpose."""


class ProtocolError(StreamscribeError):
    """The peer sent something its protocol does not allow.

    `kind` is protocol-neutral; `code` (optional) is the dialect's own close code when the
    dialect already knows it; `reason` is safe to show to the client and says what is accepted.
    """

    def __init__(self, kind: ErrorKind, reason: str, code: int | None = None) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason
        self.code = code


class ModelNotFoundError(StreamscribeError):
    """A model could not be found; the message says which package or flag fixes it."""


class AudioDecodeError(StreamscribeError):
    """An audio file or stream could not be decoded; the message says what was wrong."""


class SpeakerModelUnavailableError(StreamscribeError):
    """Speaker labels need the optional `speakers` extra (torch, resemblyzer); names the fix."""
