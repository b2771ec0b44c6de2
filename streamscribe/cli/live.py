"""`streamscribe mic` and `streamscribe stream FILE`: live transcription through a running server.

Why this exists: both commands are the same SDK client (`streamscribe.client.StreamingClient`)
fed from a different source (a microphone, a file played in real time or as fast as possible),
drawn with the same live Rich view (`streamscribe.client.console.TranscriptView`) on stderr.
What they share (options, connect / stream / terminate / report, the two-stage Ctrl-C) is here
once. They never import the server or the model: the client and its audio sources load inside
the commands.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from streamscribe.cli.common import err, fail

if TYPE_CHECKING:
    from collections.abc import Iterable

    from streamscribe.client import StreamingClient

DEFAULT_URL = "ws://127.0.0.1:8000"

UrlOption = Annotated[
    str,
    typer.Option(envvar="STREAMSCRIBE_URL", help="Server to stream to (ws:// or wss://)."),
]
ApiKeyOption = Annotated[
    str | None,
    typer.Option(envvar="STREAMSCRIBE_API_KEY", help="API key, sent as the Authorization header."),
]
CaFileOption = Annotated[
    Path | None,
    typer.Option(
        "--ca-file",
        help="Also trust this CA certificate (PEM) for a wss:// server, e.g. the ca.pem that "
        "`streamscribe serve --tls self-signed` prints.",
        exists=True,
        dir_okay=False,
    ),
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
    ca_file: Path | None = None,
) -> StreamingClient:
    from streamscribe.client import StreamingClient

    try:
        return StreamingClient(
            url,
            api_key,
            save_audio=save,
            ca_file=ca_file,
            format_turns=format_turns,
            min_turn_silence=min_turn_silence,
            max_turn_silence=max_turn_silence,
            keyterms_prompt=keyterms or None,
        )
    except ValueError as exc:
        raise fail(str(exc), 2) from None


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
        raise fail(str(exc)) from None
    except KeyboardInterrupt:
        raise fail("interrupted", 130) from None
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
        raise fail("interrupted before the last turn arrived", 130) from None
    except AudioDecodeError as exc:
        _abort(client)
        raise fail(str(exc), 2) from None
    except StreamingError as exc:
        _abort(client)
        raise fail(str(exc)) from None
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


def mic(
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    ca_file: CaFileOption = None,
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
        raise fail(str(exc), 2) from None
    client = _client(
        url, api_key, save, format_turns, min_turn_silence, max_turn_silence, keyterm, ca_file
    )
    try:
        _live(client, source, format_turns, f"listening on {source.device_name}")
    except MicrophoneError as exc:
        raise fail(str(exc), 2) from None
    finally:
        source.close()


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
    ca_file: CaFileOption = None,
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
    client = _client(
        url, api_key, save, format_turns, min_turn_silence, max_turn_silence, keyterm, ca_file
    )
    pace = "in real time" if realtime else "as fast as possible"
    _live(client, source, format_turns, f"streaming {file.name} {pace}")
