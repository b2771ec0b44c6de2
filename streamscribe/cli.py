"""The `streamscribe` command line: serve, live transcription (mic, file), offline files, models.

Why this exists: it is the one place, with `server`, that wires the layers together for a person
at a terminal. Each command is thin: `serve` turns flags into `Settings` and starts the server;
`mic` and `stream` are SDK clients (`streamscribe.client`) with a live Rich view; `transcribe`
runs the offline engine with a progress bar and writes a format from `streamscribe.formats`;
`models` lists what `engine.models` can load; `keys` creates, lists and revokes API keys in the
store the server uses (`Store.open` on the same settings). Heavy modules are imported inside the
commands, so `--help` is instant and a missing optional piece only affects the command that
needs it.

Human output (views, progress, errors) goes to stderr; transcripts written to stdout stay clean
for pipes. Exit codes: 0 success, 1 a session or server failure, 2 bad input (a file that cannot
be decoded, no microphone, an invalid option), 130 interrupted twice.
"""

from __future__ import annotations

import contextlib
import sys
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from streamscribe import __version__

if TYPE_CHECKING:
    from collections.abc import Iterable

    from streamscribe.client import StreamingClient

app = typer.Typer(
    name="streamscribe",
    help="Self-hosted real-time speech-to-text with an AssemblyAI-compatible streaming API.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)
err = Console(stderr=True)

DEFAULT_URL = "ws://127.0.0.1:8000"


class OutputFormat(StrEnum):
    txt = "txt"
    srt = "srt"
    vtt = "vtt"
    json = "json"


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


def _fail(message: str, code: int = 1, fix: str | None = None) -> typer.Exit:
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False)
    if fix:
        err.print(f"[yellow]fix:[/] {escape(fix)}", highlight=False)
    return typer.Exit(code)


def _settings(**overrides: Any) -> Any:
    """Settings from the environment, overridden by the flags that were given."""
    from pydantic import ValidationError

    from streamscribe.config import Settings

    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors(include_url=False)
        )
        raise _fail(f"invalid setting: {problems}", 2) from None


# ------------------------------------------------------------------------------------ serve

DatabaseUrlOption = Annotated[
    str | None,
    typer.Option(
        help="Database URL, e.g. postgresql+asyncpg://user:pw@host/db "
        "(default: SQLite in the data directory)."
    ),
]


RayAddressOption = Annotated[
    str | None,
    typer.Option(
        help="Address of the Ray cluster (head node host:port, e.g. 10.0.0.5:6379); default: "
        "RAY_ADDRESS or the cluster on this machine."
    ),
]
RayAppNameOption = Annotated[
    str | None,
    typer.Option(help="Name of the decode pool's Ray Serve application (default streamscribe)."),
]


@app.command()
def serve(
    host: Annotated[
        str | None, typer.Option(help="Interface to listen on (default 127.0.0.1).")
    ] = None,
    port: Annotated[int | None, typer.Option(help="TCP port to listen on (default 8000).")] = None,
    model: Annotated[
        str | None,
        typer.Option(help="Model name (tiny.en, base, small) or a model directory."),
    ] = None,
    device: Annotated[str | None, typer.Option(help="Where the model runs: cpu or cuda.")] = None,
    backend: Annotated[
        str | None,
        typer.Option(
            help="Model engine: ct2 (CTranslate2, default; CPU or CUDA 12) or torch (PyTorch: "
            "CUDA graphs on any CUDA version PyTorch supports; needs the gpu extra)."
        ),
    ] = None,
    compute_type: Annotated[
        str | None,
        typer.Option(help="CTranslate2 compute type, e.g. int8, int8_float16, float16."),
    ] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option(help="Directory for the database, recordings and assembled models."),
    ] = None,
    log_level: Annotated[
        str | None, typer.Option(help="Log level: debug, info, warning or error.")
    ] = None,
    cpu_threads: Annotated[
        int | None, typer.Option(help="Threads the model may use on the CPU (0: all cores).")
    ] = None,
    max_sessions: Annotated[
        int | None,
        typer.Option(help="Concurrent sessions accepted; more are refused as busy (default 32)."),
    ] = None,
    max_batch_size: Annotated[
        int | None, typer.Option(help="Most decode requests batched into one model call.")
    ] = None,
    database_url: DatabaseUrlOption = None,
    admin_key: Annotated[
        str | None,
        typer.Option(
            help="Secret that protects the admin API /v1/admin; unset: the admin API is off. "
            "Prefer STREAMSCRIBE_ADMIN_KEY: flags show in process listings."
        ),
    ] = None,
    retention_days: Annotated[
        float | None,
        typer.Option(help="Delete sessions, transcripts and recordings older than this."),
    ] = None,
    insecure_no_auth: Annotated[
        bool | None,
        typer.Option(
            "--insecure-no-auth",
            help="Serve without API keys even on a non-loopback address (anyone who can "
            "reach it may transcribe).",
        ),
    ] = None,
    decoder: Annotated[
        str | None,
        typer.Option(
            help="Where decodes run: local (the model in this process, default) or ray (a "
            "shared decode pool started with `streamscribe pool up`; needs the pool extra)."
        ),
    ] = None,
    ray_address: RayAddressOption = None,
    ray_app_name: RayAppNameOption = None,
) -> None:
    """Run the streaming server: [bold]ws://HOST:PORT/v3/ws[/] speaks AssemblyAI v3.

    Flags override STREAMSCRIBE_* environment variables; unset flags keep their value.
    Stop it with Ctrl-C.
    """
    settings = _settings(
        host=host,
        port=port,
        model=model,
        device=device,
        backend=backend,
        compute_type=compute_type,
        data_dir=data_dir,
        log_level=log_level,
        cpu_threads=cpu_threads,
        max_sessions=max_sessions,
        max_batch_size=max_batch_size,
        database_url=database_url,
        admin_key=admin_key,
        retention_days=retention_days,
        insecure_no_auth=insecure_no_auth,
        decoder=decoder,
        ray_address=ray_address,
        ray_app_name=ray_app_name,
    )
    from streamscribe.server.app import run

    run(settings)


# ------------------------------------------------------------------------ live: mic, stream

UrlOption = Annotated[
    str,
    typer.Option(envvar="STREAMSCRIBE_URL", help="Server to stream to (ws:// or wss://)."),
]
ApiKeyOption = Annotated[
    str | None,
    typer.Option(envvar="STREAMSCRIBE_API_KEY", help="API key, sent as the Authorization header."),
]
SaveOption = Annotated[
    Path | None,
    typer.Option("--save", help="Also write the audio sent to this WAV file.", dir_okay=False),
]
FormatTurnsOption = Annotated[
    bool,
    typer.Option(help="Ask for a punctuated, cased re-send of every ended turn."),
]
MinSilenceOption = Annotated[
    int | None,
    typer.Option(help="Silence (ms) that ends a turn when the end of turn is likely."),
]
MaxSilenceOption = Annotated[
    int | None,
    typer.Option(help="Silence (ms) that ends a turn in any case."),
]
KeytermOption = Annotated[
    list[str] | None,
    typer.Option(
        "--keyterm", "-k", help="A word or phrase to boost; repeat the option for several."
    ),
]


def _client(
    url: str,
    api_key: str | None,
    save: Path | None,
    format_turns: bool,
    min_turn_silence: int | None,
    max_turn_silence: int | None,
    keyterms: list[str] | None,
) -> StreamingClient:
    from streamscribe.client import StreamingClient

    try:
        return StreamingClient(
            url,
            api_key,
            save_audio=save,
            format_turns=format_turns,
            min_turn_silence=min_turn_silence,
            max_turn_silence=max_turn_silence,
            keyterms_prompt=keyterms or None,
        )
    except ValueError as exc:
        raise _fail(str(exc), 2) from None


def _live(client: StreamingClient, source: Iterable[bytes], format_turns: bool, what: str) -> None:
    """Connect, stream `source` with a live view; Ctrl-C or its end -> Terminate, wait, report."""
    from rich.live import Live

    from streamscribe.client import StreamingError
    from streamscribe.client.console import TranscriptView
    from streamscribe.errors import AudioDecodeError

    view = TranscriptView(err, format_turns=format_turns)
    client.on("turn", lambda _client, turn: view.update(turn))
    try:
        begin = client.connect()
    except StreamingError as exc:
        raise _fail(str(exc)) from None
    except KeyboardInterrupt:
        raise _fail("interrupted", 130) from None
    where = escape(f"session {begin.id} at {client.session_url.split('?')[0]}")
    err.print(f"[dim]{where}[/]", highlight=False)
    interrupted = False
    try:
        with Live(view, console=err, refresh_per_second=12, transient=True):
            view.status = f"{what} (Ctrl-C to stop)"
            try:
                client.stream(source)
            except KeyboardInterrupt:
                interrupted = True
            finally:
                close = getattr(source, "close", None)
                if callable(close):
                    close()
            view.status = "waiting for the last turn…"
            if interrupted:
                err.print("[yellow]finishing…[/] (Ctrl-C again to quit at once)")
            try:
                client.disconnect(terminate=True)
            finally:
                view.finish()
    except KeyboardInterrupt:
        _abort(client)
        raise _fail("interrupted before the last turn arrived", 130) from None
    except AudioDecodeError as exc:
        _abort(client)
        raise _fail(str(exc), 2) from None
    except StreamingError as exc:
        _abort(client)
        raise _fail(str(exc)) from None
    _report(client)


def _abort(client: StreamingClient) -> None:
    """Close the session at once (no Terminate); the error being reported is the one that counts."""
    from streamscribe.client import StreamingError

    with contextlib.suppress(StreamingError, KeyboardInterrupt):
        client.disconnect(terminate=False)


def _report(client: StreamingClient) -> None:
    end = client.termination
    if end is not None:
        err.print(
            f"[green]done:[/] {end.audio_duration_seconds:g} s of audio in "
            f"{end.session_duration_seconds:g} s",
            highlight=False,
        )
    save = client.save_audio
    if save is not None:
        err.print(f"[dim]audio saved to {escape(str(save))}[/]", highlight=False)


def _parse_device(device: str | None) -> int | str | None:
    return int(device) if device is not None and device.strip().isdigit() else device


@app.command()
def mic(
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    device: Annotated[
        str | None,
        typer.Option(help="Input device index or name (list them: python -m sounddevice)."),
    ] = None,
    save: SaveOption = None,
    format_turns: FormatTurnsOption = True,
    min_turn_silence: MinSilenceOption = None,
    max_turn_silence: MaxSilenceOption = None,
    keyterm: KeytermOption = None,
) -> None:
    """Transcribe the microphone live through a running server.

    Final words are [bold]bold[/], tentative ones dim; each ended turn stays as one line.
    Ctrl-C stops recording, waits for the last turn, and prints the audio duration.
    """
    from streamscribe.client import MicrophoneError, MicrophoneStream

    try:
        source = MicrophoneStream(device=_parse_device(device))
    except MicrophoneError as exc:
        raise _fail(str(exc), 2) from None
    client = _client(url, api_key, save, format_turns, min_turn_silence, max_turn_silence, keyterm)
    try:
        _live(client, source, format_turns, f"listening on {source.device_name}")
    except MicrophoneError as exc:
        raise _fail(str(exc), 2) from None
    finally:
        source.close()


@app.command()
def stream(
    file: Annotated[
        Path,
        typer.Argument(
            help="Audio or video file (anything FFmpeg reads).", exists=True, dir_okay=False
        ),
    ],
    realtime: Annotated[
        bool,
        typer.Option(
            "--realtime/--fast",
            help="Send at the speed of speech (as a live source would) or as fast as possible.",
        ),
    ] = True,
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    save: SaveOption = None,
    format_turns: FormatTurnsOption = True,
    min_turn_silence: MinSilenceOption = None,
    max_turn_silence: MaxSilenceOption = None,
    keyterm: KeytermOption = None,
) -> None:
    """Stream a file through a running server and watch the live transcript.

    Shows the same view as [bold]mic[/]; the session ends when the file does.
    """
    from streamscribe.client import FileStream

    source = FileStream(file, realtime=realtime)
    client = _client(url, api_key, save, format_turns, min_turn_silence, max_turn_silence, keyterm)
    pace = "in real time" if realtime else "as fast as possible"
    _live(client, source, format_turns, f"streaming {file.name} {pace}")


# ------------------------------------------------------------------------------ transcribe


@app.command()
def transcribe(
    file: Annotated[
        Path,
        typer.Argument(
            help="Audio or video file (anything FFmpeg reads).", exists=True, dir_okay=False
        ),
    ],
    output_format: Annotated[
        OutputFormat | None,
        typer.Option(
            "--format", "-f", help="Output format (default: from the -o suffix, else txt)."
        ),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Write here instead of stdout.", dir_okay=False),
    ] = None,
    model: Annotated[
        str | None, typer.Option(help="Model name (tiny.en, base, small) or a model directory.")
    ] = None,
    device: Annotated[str | None, typer.Option(help="Where the model runs: cpu or cuda.")] = None,
    compute_type: Annotated[
        str | None, typer.Option(help="CTranslate2 compute type, e.g. int8 or float16.")
    ] = None,
    data_dir: Annotated[
        Path | None, typer.Option(help="Directory holding assembled models.")
    ] = None,
) -> None:
    """Transcribe a file offline (no server needed) to text, SRT, WebVTT or JSON."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from streamscribe.errors import AudioDecodeError, ModelNotFoundError
    from streamscribe.formats import FORMATS

    fmt = output_format.value if output_format else None
    if fmt is None and output is not None and output.suffix.lstrip(".").lower() in FORMATS:
        fmt = output.suffix.lstrip(".").lower()
    fmt = fmt or "txt"
    settings = _settings(model=model, device=device, compute_type=compute_type, data_dir=data_dir)
    from streamscribe.engine.offline import transcribe_file

    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[seconds]}"),
        TimeRemainingColumn(),
        console=err,
        transient=True,
    )
    try:
        with progress:
            task = progress.add_task(f"transcribing {file.name}", total=None, seconds="")

            def on_progress(done: float, total: float) -> None:
                seconds = f"{done:.0f}/{total:.0f} s of audio" if total else f"{done:.0f} s"
                progress.update(task, completed=done, total=total or None, seconds=seconds)

            turns = transcribe_file(file, settings, on_progress=on_progress)
    except AudioDecodeError as exc:
        raise _fail(f"cannot decode {file}: {exc}", 2) from None
    except ModelNotFoundError as exc:
        raise _fail(str(exc), 2) from None
    except KeyboardInterrupt:
        raise _fail("interrupted", 130) from None
    text = FORMATS[fmt](turns)
    if output is None:
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text, encoding="utf-8")
        err.print(
            f"[green]wrote[/] {len(turns)} turns to {escape(str(output))} ({fmt})", highlight=False
        )


# ---------------------------------------------------------------------------------- models


@app.command()
def models(
    data_dir: Annotated[
        Path | None, typer.Option(help="Directory holding assembled models.")
    ] = None,
) -> None:
    """List the speech models: which are installed, where from, and how to get the others."""
    from streamscribe.engine.models import list_models

    settings = _settings(data_dir=data_dir)
    table = Table(title="speech models", title_justify="left")
    table.add_column("name", style="bold")
    table.add_column("installed")
    table.add_column("languages")
    table.add_column("source", overflow="fold")
    table.add_column("path or fix", overflow="fold")
    for info in list_models(settings.model_cache_dir):
        table.add_row(
            info.name,
            "[green]yes[/]" if info.installed else "[red]no[/]",
            "multilingual" if info.multilingual else "English",
            info.source,
            Text(info.path or "") if info.installed else Text(info.fix or "", style="yellow"),
        )
    Console().print(table)


# ------------------------------------------------------------------------------------ keys

keys_app = typer.Typer(
    name="keys",
    help="Manage API keys: create (the secret is shown once), list, revoke.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(keys_app, name="keys")

KeysDataDirOption = Annotated[
    Path | None,
    typer.Option(help="The server's data directory (holds the SQLite database by default)."),
]


def _with_store(data_dir: Path | None, database_url: str | None, work: Any) -> Any:
    """Open the server's store as the settings name it, run `work(store)`, close it."""
    import asyncio

    from sqlalchemy.exc import SQLAlchemyError

    settings = _settings(data_dir=data_dir, database_url=database_url)

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
        raise _fail(
            f"cannot open the database at {where}: {exc}",
            1,
            fix="check --data-dir / --database-url (or STREAMSCRIBE_DATA_DIR / "
            "STREAMSCRIBE_DATABASE_URL)",
        ) from None


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
        raise _fail(
            str(exc), 2, fix="choose another name, or `streamscribe keys revoke NAME` first"
        ) from None
    err.print(
        f"[green]created key[/] {escape(key.name)} (id {key.id}, prefix {escape(key.prefix)})",
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
            Text(key.name),
            key.id,
            Text(key.prefix + "…"),
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
        raise _fail(
            f"no key in use with id or name {id_or_name!r}",
            1,
            fix="see the keys with `streamscribe keys list`",
        )
    err.print(f"[green]revoked[/] {escape(id_or_name)}", highlight=False)


if __name__ == "__main__":  # pragma: no cover
    app()


# ------------------------------------------------------------------------- pool (Ray Serve)

pool_app = typer.Typer(
    help="A shared decode pool on Ray Serve for many front-ends (`serve --decoder ray`).",
    no_args_is_help=True,
)
app.add_typer(pool_app, name="pool")


@pool_app.command("up")
def pool_up(
    ray_address: RayAddressOption = None,
    app_name: RayAppNameOption = None,
    model: Annotated[
        str | None, typer.Option(help="Model the replicas serve (tiny.en, base, small, a dir).")
    ] = None,
    backend: Annotated[str | None, typer.Option(help="Model engine: ct2 or torch.")] = None,
    device: Annotated[str | None, typer.Option(help="cpu, or cuda (one replica per GPU).")] = None,
    compute_type: Annotated[str | None, typer.Option(help="e.g. int8, float16.")] = None,
    cpu_threads: Annotated[
        int | None, typer.Option(help="Threads per replica on the CPU (0: all cores).")
    ] = None,
    data_dir: Annotated[
        Path | None, typer.Option(help="Where replicas assemble split models (per node).")
    ] = None,
    replicas: Annotated[int, typer.Option(min=1, help="Decode replicas (the minimum).")] = 1,
    max_replicas: Annotated[
        int | None,
        typer.Option(min=1, help="Autoscale up to this many replicas on ongoing requests."),
    ] = None,
    replica_cpus: Annotated[
        float, typer.Option(min=0.1, help="CPUs reserved per replica on CPU nodes.")
    ] = 1.0,
    max_batch_size: Annotated[
        int, typer.Option(min=1, help="Most requests one replica decodes in one model call.")
    ] = 8,
    batch_wait_ms: Annotated[
        float, typer.Option(min=0, help="How long a replica waits to fill a batch.")
    ] = 10.0,
    start_timeout: Annotated[
        float, typer.Option(help="Seconds to wait for every replica to start.")
    ] = 600.0,
    foreground: Annotated[
        bool, typer.Option(help="Stay in the foreground; Ctrl-C removes the pool.")
    ] = False,
) -> None:
    """Start the decode pool on an existing Ray cluster (`ray start --head` first)."""
    from streamscribe.errors import StreamscribeError
    from streamscribe.logs import configure as configure_logging
    from streamscribe.pool.deployment import PoolOptions
    from streamscribe.pool.launch import pool_up as launch

    settings = _settings(
        model=model,
        backend=backend,
        device=device,
        compute_type=compute_type,
        cpu_threads=cpu_threads,
        data_dir=data_dir,
        ray_address=ray_address,
        ray_app_name=app_name,
    )
    configure_logging(settings.log_level)
    options = PoolOptions(
        replicas=replicas,
        max_replicas=max_replicas,
        max_batch_size=max_batch_size,
        batch_wait_ms=batch_wait_ms,
        num_cpus=replica_cpus,
    )
    try:
        line = launch(
            settings,
            options,
            settings.ray_address,
            settings.ray_app_name,
            start_timeout_s=start_timeout,
            blocking=foreground,
        )
    except StreamscribeError as exc:
        raise _fail(str(exc)) from None
    err.print(line)


@pool_app.command("down")
def pool_down(ray_address: RayAddressOption = None, app_name: RayAppNameOption = None) -> None:
    """Remove the decode pool (front-ends using it get a clear error on their next decode)."""
    from streamscribe.errors import StreamscribeError
    from streamscribe.pool.launch import pool_down as remove

    settings = _settings(ray_address=ray_address, ray_app_name=app_name)
    try:
        removed = remove(settings.ray_address, settings.ray_app_name)
    except StreamscribeError as exc:
        raise _fail(str(exc)) from None
    err.print(
        f"decode pool {settings.ray_app_name!r} " + ("removed" if removed else "was not running")
    )
