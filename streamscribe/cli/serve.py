"""`streamscribe serve`, with one flag per `Settings` field, generated from the fields.

Why this exists: the server's configuration is `streamscribe.config.Settings`, and its flags
used to restate every field by hand (name, type, default, help), drifting apart as fields were
added. Here the flags are derived instead: each field becomes `--field-name` (or the spelling in
its `json_schema_extra["flag"]`), typed by its annotation, helped by its description, showing
its default; fields marked `ENV_ONLY` stay environment variables only. So a new setting is a new
field with a description, and `serve` has its flag.

Every generated option defaults to None ("not given"), so precedence is exactly: a flag given
on the command line, else the STREAMSCRIBE_* environment variable, else the field's default
(pydantic-settings does the last two in `load_settings`).

Building the command needs pydantic, which `streamscribe --help`, `mic` and `stream` should not
pay for: the root group (`streamscribe.cli`) lists a stand-in `serve` with the same help and
swaps in `serve_command()` only when `serve` is the command being run.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Annotated, Any

import typer

from streamscribe.cli.common import load_settings

if TYPE_CHECKING:
    from collections.abc import Callable

    from pydantic.fields import FieldInfo

SERVE_HELP = """Run the streaming server: [bold]ws://HOST:PORT/v3/ws[/] speaks AssemblyAI v3.

Flags override STREAMSCRIBE_* environment variables; unset flags keep their value.
Stop it with Ctrl-C.
"""


def run_server(**flags: Any) -> None:
    """The body of `serve`: Settings from the environment and the flags given, then the server."""
    settings = load_settings(**flags)
    from streamscribe.server.app import run

    run(settings)


def flag_name(name: str, field: FieldInfo) -> str | None:
    """The flag of a Settings field: None for an environment-only one."""
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    if extra.get("cli", True) is False:
        return None
    flag = extra.get("flag")
    return str(flag) if flag else "--" + name.replace("_", "-")


def settings_parameters() -> list[inspect.Parameter]:
    """One keyword parameter per flagged Settings field, annotated the way Typer reads options."""
    from streamscribe.config import Settings

    prefix = Settings.model_config.get("env_prefix", "")
    parameters = []
    for name, field in Settings.model_fields.items():
        flag = flag_name(name, field)
        if flag is None:
            continue
        if not field.description:
            raise TypeError(f"Settings.{name} needs a description: it is the help of {flag}")
        default = field.get_default(call_default_factory=True)
        declarations = [flag]
        if field.annotation is bool:
            default = str(default).lower()
            if default == "true":  # an on-by-default switch must be able to turn off
                declarations = [f"{flag}/--no-{flag.removeprefix('--')}"]
        # what applies when the flag is not given, e.g. "$STREAMSCRIBE_PORT or 8000"
        shown = f"${prefix}{name.upper()}" + ("" if default is None else f" or {default}")
        option = typer.Option(*declarations, help=field.description, show_default=shown)
        parameters.append(
            inspect.Parameter(
                name,
                inspect.Parameter.KEYWORD_ONLY,
                default=None,  # not given: the environment or the field's default decides
                annotation=Annotated[field.annotation | None, option],  # type: ignore[valid-type]
            )
        )
    return parameters


def settings_command(body: Callable[..., None]) -> Callable[..., None]:
    """A function Typer turns into a command with the Settings flags, calling `body(**flags)`."""

    def command(**flags: Any) -> None:
        body(**flags)

    parameters = settings_parameters()
    command.__signature__ = inspect.Signature(parameters, return_annotation=None)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in parameters} | {"return": None}
    command.__doc__ = body.__doc__
    return command


def serve_command() -> Any:
    """The real `serve` click command, its options generated from `Settings`."""
    app = typer.Typer(
        add_completion=False,
        rich_markup_mode="rich",
        context_settings={"help_option_names": ["-h", "--help"]},
    )
    app.command("serve", help=SERVE_HELP)(settings_command(run_server))
    return typer.main.get_command(app)
