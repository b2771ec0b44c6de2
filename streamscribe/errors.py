"""Error types shared by every layer, split by whose fault the error is.

StreamscribeError
├── ProtocolError          ends (or refuses) a session; carries an ErrorKind and a reason that
│   │                      names the fix; `except ProtocolError` catches both branches below.
│   │                      Each dialect maps the kind to its own close code and message.
│   ├── PeerError          the peer broke its protocol: bad request, bad audio, bad credentials
│   │                      (kinds AUTH, BAD_REQUEST, BAD_AUDIO)
│   └── ServerRefusal      a condition on our side ends or refuses the session: busy, a limit or
│                          rate the server enforces, a spent daily quota, expiry, idle timeout,
│                          an internal fault (kinds BUSY, LIMIT, QUOTA, RATE, EXPIRED, TIMEOUT,
│                          INTERNAL)
├── LocalProtocolError     we (the server) tried to step a dialect in a state where that step is
│                          illegal: a bug of ours, never the client's; deliberately not a
│                          ProtocolError, so no `except ProtocolError` renders it as the peer's
├── ModelNotFoundError     a model name or directory could not be resolved; names the fix
├── AudioDecodeError       a file or stream could not be decoded
└── SpeakerModelUnavailableError  speaker labels were asked for without the `speakers` extra

`ProtocolError(kind, reason)` still constructs the base itself (older call sites); new code
raises the subclass, or `ProtocolError.of(kind, reason)` when the kind is only known at run time.
A dialect that sends a close code of its own for one particular mistake keeps it on its own error
type (`protocols.common.coded`), never here: these types are protocol-neutral.
"""

from __future__ import annotations

from typing import ClassVar

from streamscribe.events import ErrorKind


class StreamscribeError(Exception):
    """Base of every error streamscribe raises on purpose."""


class ProtocolError(StreamscribeError):
    """A session cannot go on (or cannot start): `kind` is protocol-neutral, `reason` is safe to
    show to the client and says what is accepted. Prefer `PeerError` or `ServerRefusal`."""

    kinds: ClassVar[frozenset[ErrorKind]] = frozenset(ErrorKind)

    def __init__(self, kind: ErrorKind, reason: str) -> None:
        if kind not in self.kinds:
            raise ValueError(f"{type(self).__name__} cannot carry kind {kind.value!r}")
        super().__init__(reason)
        self.kind = kind
        self.reason = reason

    @staticmethod
    def of(kind: ErrorKind, reason: str) -> ProtocolError:
        """The subclass the kind belongs to: `PeerError` or `ServerRefusal`."""
        return PeerError(kind, reason) if kind in PeerError.kinds else ServerRefusal(kind, reason)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.kind.value!r}, {self.reason!r})"


class PeerError(ProtocolError):
    """The peer sent something its protocol does not allow (h11's RemoteProtocolError)."""

    kinds = frozenset({ErrorKind.AUTH, ErrorKind.BAD_REQUEST, ErrorKind.BAD_AUDIO})


class ServerRefusal(ProtocolError):
    """A server condition ends or refuses the session; the peer did nothing wrong by the
    protocol's rules (it may retry, slow down, or reconnect)."""

    kinds = frozenset(ErrorKind) - PeerError.kinds


class LocalProtocolError(StreamscribeError):
    """We tried to do `step` in `state`, which the dialect's transition table does not allow.

    A bug on the server's side (a loop that kept feeding a closed dialect), never the peer's:
    the session loop's catch-all ends that session with an internal error."""

    def __init__(self, dialect: str, step: str, state: str) -> None:
        super().__init__(f"{dialect}: tried to {step} in state {state}")
        self.dialect = dialect
        self.step = step
        self.state = state


class ModelNotFoundError(StreamscribeError):
    """A model could not be found; the message says which package or flag fixes it."""


class AudioDecodeError(StreamscribeError):
    """An audio file or stream could not be decoded; the message says what was wrong."""


class SpeakerModelUnavailableError(StreamscribeError):
    """Speaker labels need the optional `speakers` extra (torch, resemblyzer); names the fix."""
