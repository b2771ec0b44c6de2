"""Structured logs: every line a session writes carries its session id.

`session_context(id)` sets a context variable for the session's tasks (tasks created inside
inherit it); the filter copies it onto each record, and `configure()` prints it in every line.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import re
from collections.abc import Iterator

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


# query parameters that carry a credential (browser clients cannot set headers)
_SECRET_PARAM = re.compile(
    r"(?i)\b(token|authorization|api_key|apikey|key|access_token)=[^&\s\"']+"
)


def redact(text: str) -> str:
    """`text` with every credential-bearing query parameter's value replaced by ***."""
    return _SECRET_PARAM.sub(lambda m: f"{m.group(1)}=***", text)


class RedactSecretsFilter(logging.Filter):
    """Keeps keys and tokens out of the logs: uvicorn logs each request's full URL."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, ()
        return True


def configure(level: str = "info") -> None:
    handler = logging.StreamHandler()
    handler.addFilter(SessionIdFilter())
    handler.addFilter(RedactSecretsFilter())
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(name)s session=%(session_id)s %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
