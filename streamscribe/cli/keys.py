"""`streamscribe keys create|list|revoke`: API keys in the store the server uses.

Why this exists: keys are created and revoked by an operator at a terminal, against the same
database the server opens (`Store.open` on the same settings: `--data-dir`, `--database-url` or
their STREAMSCRIBE_* variables). A secret is printed once, alone on stdout, for scripts; the
rest goes to stderr. The store (SQLAlchemy) loads inside the commands, never the model stack.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from streamscribe.cli.common import err, fail, load_settings

DatabaseUrlOption = Annotated[
    str | None,
    typer.Option(
        help="Database URL, e.g. postgresql+asyncpg://user:pw@host/db "
        "(default: SQLite in the data directory)."
    ),
]

keys_app = typer.Typer(
    name="keys",
    help="Manage API keys: create (the secret is shown once), list, revoke.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)

KeysDataDirOption = Annotated[
    Path | None,
    typer.Option(help="The server's data directory (holds the SQLite database by default)."),
]


def _with_store(data_dir: Path | None, database_url: str | None, work: Any) -> Any:
    """Open the server's store as the settings name it, run `work(store)`, close it."""
    import asyncio

    from sqlalchemy.exc import SQLAlchemyError

    settings = load_settings(data_dir=data_dir, database_url=database_url)

    async def main() -> Any:
        from streamscribe.store import Store

        store = await Store.open(settings.database_url, settings.data_dir)
        try:
            return await work(store)
        finally:
            await store.close()

    try:
        return asyncio.run(main())
    except (OSError, SQLAlchemyError) as exc:
        where = settings.database_url or str(settings.data_dir)
        raise fail(
            f"cannot open the database at {where}: {exc}",
            1,
            fix="check --data-dir / --database-url (or STREAMSCRIBE_DATA_DIR / "
            "STREAMSCRIBE_DATABASE_URL)",
        ) from None


# control characters (an escape sequence can rewrite the terminal: colours, title, clearing,
# hiding text) and bidirectional overrides; key names come from the admin API too
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069]")


def shown(text: str) -> str:
    """`text` safe for a terminal: every control character written as its escape (\\x1b)."""
    return _UNPRINTABLE.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


def _limit(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    return f"{value:g}{unit}"


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Argument(help="A name for the key (unique among keys in use).")],
    max_streams: Annotated[
        int | None, typer.Option(min=1, help="Concurrent sessions this key may hold.")
    ] = None,
    max_audio_hours_per_day: Annotated[
        float | None,
        typer.Option(min=0.001, help="Hours of audio this key may stream per UTC day."),
    ] = None,
    max_session_seconds: Annotated[
        int | None, typer.Option(min=60, help="Longest session of this key, in seconds.")
    ] = None,
    no_record: Annotated[
        bool,
        typer.Option("--no-record", help="Never keep recordings of this key's sessions."),
    ] = False,
    data_dir: KeysDataDirOption = None,
    database_url: DatabaseUrlOption = None,
) -> None:
    """Create an API key and print its secret [bold]once[/]: it is not stored anywhere.

    The secret goes to stdout alone (for scripts); everything else goes to stderr.
    """

    async def work(store: Any) -> Any:
        return await store.create_key(
            name,
            max_streams=max_streams,
            max_audio_hours_per_day=max_audio_hours_per_day,
            max_session_seconds=max_session_seconds,
            record_audio=not no_record,
        )

    try:
        key, secret = _with_store(data_dir, database_url, work)
    except ValueError as exc:
        raise fail(
            str(exc), 2, fix="choose another name, or `streamscribe keys revoke NAME` first"
        ) from None
    err.print(
        f"[green]created key[/] {escape(shown(key.name))} (id {key.id}, "
        f"prefix {escape(shown(key.prefix))})",
        highlight=False,
    )
    print(secret, flush=True)
    err.print(
        "[bold yellow]warning:[/] this secret is shown once and is not stored: copy it now. "
        "Clients send it as the Authorization header.",
        highlight=False,
    )


@keys_app.command("list")
def keys_list(
    active: Annotated[
        bool, typer.Option("--active", help="Only keys in use (hide revoked ones).")
    ] = False,
    data_dir: KeysDataDirOption = None,
    database_url: DatabaseUrlOption = None,
) -> None:
    """List API keys: name, id, prefix, created, revoked, limits (never the secrets)."""

    async def work(store: Any) -> Any:
        return await store.list_keys(include_revoked=not active)

    keys = _with_store(data_dir, database_url, work)
    if not keys:
        err.print("no API keys yet: create one with `streamscribe keys create NAME`")
        return
    table = Table(title="API keys", title_justify="left")
    table.add_column("name", style="bold")
    table.add_column("id", overflow="fold")
    table.add_column("prefix")
    table.add_column("created")
    table.add_column("revoked")
    table.add_column("max streams", justify="right")
    table.add_column("audio h/day", justify="right")
    table.add_column("max session", justify="right")
    table.add_column("record")
    for key in keys:
        revoked = (
            f"[red]{key.revoked_at:%Y-%m-%d %H:%M}[/]"
            if key.revoked_at
            else ("[red]yes[/]" if key.revoked else "no")
        )
        table.add_row(
            Text(shown(key.name)),
            Text(shown(key.id)),
            Text(shown(key.prefix) + "…"),
            f"{key.created:%Y-%m-%d %H:%M}",
            revoked,
            _limit(key.max_streams),
            _limit(key.max_audio_hours_per_day),
            _limit(key.max_session_seconds, " s"),
            "yes" if key.record_audio else "no",
        )
    Console().print(table)


@keys_app.command("revoke")
def keys_revoke(
    id_or_name: Annotated[str, typer.Argument(help="The key's id or its name.")],
    data_dir: KeysDataDirOption = None,
    database_url: DatabaseUrlOption = None,
) -> None:
    """Revoke an API key: new sessions with it are refused at once."""

    async def work(store: Any) -> Any:
        return await store.revoke_key(id_or_name)

    if not _with_store(data_dir, database_url, work):
        raise fail(
            f"no key in use with id or name {id_or_name!r}",
            1,
            fix="see the keys with `streamscribe keys list`",
        )
    err.print(f"[green]revoked[/] {escape(shown(id_or_name))}", highlight=False)
