"""The `streamscribe` command line: serve, live transcription (mic, file), offline files, models.

Why this exists: it is the one place, with `server`, that wires the layers together for a person
at a terminal. Each command is thin and lives in its own module: `serve` turns flags into
`Settings` and starts the server (its flags are generated from `Settings`, see `cli.serve`);
`mic` and `stream` (`cli.live`) are SDK clients (`streamscribe.client`) with a live Rich view;
`transcribe` (`cli.offline`) runs the offline engine with a progress bar and writes a format from
`streamscribe.formats`; `models` (`cli.offline`) lists what `engine.model_files` can load; `keys`
(`cli.keys`) creates, lists and revokes API keys in the store the server uses (`Store.open` on
the same settings); `pool` (`cli.pool`) starts and removes a Ray Serve decode pool. Heavy modules
are imported inside the commands, so `--help` is instant and a missing optional piece only
affects the command that needs it. This module only builds the root `app` and registers them.

Human output (views, progress, errors) goes to stderr; transcripts written to stdout stay clean
for pipes. Exit codes: 0 success, 1 a session or server failure, 2 bad input (a file that cannot
be decoded, no microphone, an invalid option), 130 interrupted twice.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from streamscribe import __version__
from streamscribe.cli import keys, live, offline, pool, serve


class _Commands(TyperGroup):
    """The root group; builds the real `serve` (flags from `Settings`) only when it is run.

    Listing the commands (`streamscribe --help`) sees the stand-in registered below, which has
    the same help, so pydantic is not imported unless a command needs settings.
    """

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        name, command, rest = super().resolve_command(ctx, args)
        if name == "serve":
            command = serve.serve_command()
        return name, command, rest


app = typer.Typer(
    name="streamscribe",
    cls=_Commands,
    help="Self-hosted real-time speech-to-text with an AssemblyAI-compatible streaming API.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        print(f"streamscribe {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool,
        typer.Option("--version", help="Print the version and exit.", callback=_version),
    ] = False,
) -> None:
    """Self-hosted real-time speech-to-text with an AssemblyAI-compatible streaming API.

    Start a server with [bold]streamscribe serve[/], then transcribe live with
    [bold]streamscribe mic[/] or [bold]streamscribe stream FILE[/]; transcribe a file offline
    (no server needed) with [bold]streamscribe transcribe FILE[/].
    """


@app.command("serve", help=serve.SERVE_HELP)
def _serve_stand_in() -> None:  # pragma: no cover - replaced by serve.serve_command() when run
    """Listed in `streamscribe --help`; `_Commands.resolve_command` runs the real one."""


app.command()(live.mic)
app.command()(live.stream)
app.command()(offline.transcribe)
app.command()(offline.models)
app.add_typer(keys.keys_app, name="keys")
app.add_typer(pool.pool_app, name="pool")

__all__ = ["app"]
