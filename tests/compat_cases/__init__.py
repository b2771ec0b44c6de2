"""One row per wire dialect for the compatibility matrix (tests/integration/test_compat_matrix.py).

Each module here defines `CASE`, an object with:
  name            the dialect, as in the README table
  first / last    the message type that must open / close a clean session (`last` may be None
                  for dialects that end with a bare close or an HTTP response)
  clean_close     the WebSocket close code of a clean end (None for HTTP-only dialects)
  bad_code        the close code or HTTP status the dialect answers its bad-input case with
  stream(server, speech) -> Outcome     stream real speech with the vendor's own client
  bad_input(server) -> BadOutcome       one malformed request, answered in the dialect's shape

Adding a dialect is adding one module here (and its routes): the matrix picks it up.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field


@dataclass
class Outcome:
    transcript: str  # the final transcript as the client assembled it
    messages: list[str]  # message types in the order the client received them
    close_code: int | None = None  # how the server closed (None: HTTP)
    extra: dict = field(default_factory=dict)


@dataclass
class BadOutcome:
    code: int  # close code or HTTP status
    error: str  # the error text, read from the dialect's own error shape


def all_cases() -> list:
    cases = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        if hasattr(module, "CASE"):
            cases.append(module.CASE)
    return cases
