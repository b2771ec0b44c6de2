"""`streamscribe transcribe FILE` and `streamscribe models`: the model on this machine, no server.

Why this exists: these two commands use the engine directly rather than a server. `transcribe`
runs the offline engine (`engine.offline.transcribe_file`) with a progress bar and writes one of
`streamscribe.formats`; `models` lists what the engine can load and how to get the rest. Both
import the engine inside the command, so `--help` stays instant, and `models` reads only the
model catalogue (`list_models`), never the model stack itself.
"""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from streamscribe.cli.common import err, fail, load_settings


class OutputFormat(StrEnum):
    txt = "txt"
    srt = "srt"
    vtt = "vtt"
    json = "json"


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
    settings = load_settings(
        model=model, device=device, compute_type=compute_type, data_dir=data_dir
    )
    from streamscribe.engine.offline import transcribe_file
    from streamscribe.server.decoder_choice import load_transcriber

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

            turns = transcribe_file(
                file, settings, on_progress=on_progress, loader=load_transcriber
            )
    except AudioDecodeError as exc:
        raise fail(f"cannot decode {file}: {exc}", 2) from None
    except ModelNotFoundError as exc:
        raise fail(str(exc), 2) from None
    except KeyboardInterrupt:
        raise fail("interrupted", 130) from None
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


def models(
    data_dir: Annotated[
        Path | None, typer.Option(help="Directory holding assembled models.")
    ] = None,
) -> None:
    """List the speech models: which are installed, where from, and how to get the others."""
    from streamscribe.engine.model_files import list_models

    settings = load_settings(data_dir=data_dir)
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
