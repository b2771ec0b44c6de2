"""What every command shares: the stderr console, the one way to fail, and `Settings` loading.

Why this exists: the commands live in separate modules, but they must fail the same way (a red
`error:` line, an optional `fix:` line, a documented exit code) and read settings the same way
(environment first, then the flags that were given). Nothing heavy is imported here: pydantic
and `streamscribe.config` load inside `load_settings`, when a command actually runs.
"""

from __future__ import annotations

from typing import Any

import typer
from rich.console import Console
from rich.markup import escape

# human output (views, progress, errors) goes here; stdout stays clean for transcripts and secrets
err = Console(stderr=True)


def fail(message: str, code: int = 1, fix: str | None = None) -> typer.Exit:
    """Print `error: message` (and `fix: ...`) to stderr; return the Exit for the caller to raise.

    Codes: 1 a session or server failure, 2 bad input, 130 interrupted.
    """
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False)
    if fix:
        err.print(f"[yellow]fix:[/] {escape(fix)}", highlight=False)
    return typer.Exit(code)


def load_settings(**overrides: Any) -> Any:
    """Settings from the environment, overridden by the flags that were given (None: not given).

    An invalid value, from a flag or an environment variable, exits with code 2 and says which.
    """
    from pydantic import ValidationError

    from streamscribe.config import Settings

    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors(include_url=False)
        )
        raise fail(f"invalid setting: {problems}", 2) from None
