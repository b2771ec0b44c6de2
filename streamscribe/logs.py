"""Structured logs: every line a session writes carries its session id, and no credential.

`session_context(id)` sets a context variable for the session's tasks (tasks created inside
inherit it); the filter copies it onto each record, and `configure()` prints it in every line.

`redact` masks credentials wherever a line can carry them: query parameters (uvicorn logs each
request's raw URL) judged by their name *after* percent-decoding, because the server decodes
names before reading them (`?%74oken=` is read as `token`), so the log must too; header-like
`Authorization: ...` pairs; and anything shaped like one of our keys or tokens (`sk_...`,
`tk_...`) whatever carries it.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import re
from collections.abc import Iterator
from urllib.parse import unquote_plus

_session_id: contextvars.ContextVar[str] = contextvars.ContextVar("session_id", default="-")


@contextlib.contextmanager
def session_context(session_id: str) -> Iterator[None]:
    token = _session_id.set(session_id)
    try:
        yield
    finally:
        _session_id.reset(token)


class SessionIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.session_id = _session_id.get()
        return True


# names of query parameters that carry a credential (browser clients cannot set headers),
# compared after percent-decoding and lower-casing
SECRET_PARAMS = frozenset(
    {"token", "authorization", "api_key", "apikey", "key", "access_token", "x-api-key"}
)
# a name=value pair: the name is what may stand before "=" in a query string
_PARAM = re.compile(r"(?P<name>[A-Za-z0-9_.~+%\-\[\]]+)=(?P<value>[^&\s\"'<>]+)")
# "Authorization: Bearer x" / "'authorization': 'x'" (a header, or a dict of headers, printed)
_HEADER = re.compile(
    r"(?i)(?P<name>\b(?:proxy-)?authorization|\bx-api-key|\bapi-key)(?P<sep>[\"']?\s*[:=,]\s*[\"']?)"
    r"(?P<scheme>(?:bearer|token|basic)\s+)?(?P<value>[^\s\"',;}]+)"
)
# our own secrets, whatever carries them (store: sk_ keys, tk_ tokens)
_OWN_SECRET = re.compile(r"\b(?P<prefix>sk_|tk_)[A-Za-z0-9_\-]{8,}")
_DECODE_ROUNDS = 3  # a name percent-encoded more than once is masked too


def is_secret_param(name: str) -> bool:
    """Whether a query parameter named `name` (raw, as in a URL) carries a credential."""
    for _ in range(_DECODE_ROUNDS + 1):
        if name.strip().lower() in SECRET_PARAMS:
            return True
        decoded = unquote_plus(name)
        if decoded == name:
            return False
        name = decoded
    return False


def redact(text: str) -> str:
    """`text` with every credential replaced by ***: credential-bearing query parameters
    (however their names are percent-encoded), Authorization-like headers, and our own key
    and token shapes."""
    text = _PARAM.sub(
        lambda m: f"{m['name']}=***" if is_secret_param(m["name"]) else m.group(), text
    )
    text = _HEADER.sub(lambda m: f"{m['name']}{m['sep']}{m['scheme'] or ''}***", text)
    return _OWN_SECRET.sub(lambda m: f"{m['prefix']}***", text)


class RedactSecretsFilter(logging.Filter):
    """Keeps keys and tokens out of the logs: uvicorn logs each request's full URL."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, ()
        return True


class RedactingFormatter(logging.Formatter):
    """Redacts the whole formatted record, tracebacks and exception messages included."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def configure(level: str = "info") -> None:
    handler = logging.StreamHandler()
    handler.addFilter(SessionIdFilter())
    handler.addFilter(RedactSecretsFilter())
    handler.setFormatter(
        RedactingFormatter("%(asctime)s %(levelname)s %(name)s session=%(session_id)s %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
