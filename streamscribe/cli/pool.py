"""`streamscribe pool up|down`: a shared decode pool on Ray Serve for many front-ends.

Why this exists: past one machine, model replicas run on a Ray cluster and any number of
`streamscribe serve --decoder ray` front-ends send them decode requests. These commands start
and remove that pool; Ray and the pool modules load inside them (the pool extra), so the rest of
the command line never needs Ray.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from streamscribe.cli.common import err, fail, load_settings

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

pool_app = typer.Typer(
    help="A shared decode pool on Ray Serve for many front-ends (`serve --decoder ray`).",
    no_args_is_help=True,
)


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

    settings = load_settings(
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
        raise fail(str(exc)) from None
    err.print(line)


@pool_app.command("down")
def pool_down(ray_address: RayAddressOption = None, app_name: RayAppNameOption = None) -> None:
    """Remove the decode pool (front-ends using it get a clear error on their next decode)."""
    from streamscribe.errors import StreamscribeError
    from streamscribe.pool.launch import pool_down as remove

    settings = load_settings(ray_address=ray_address, ray_app_name=app_name)
    try:
        removed = remove(settings.ray_address, settings.ray_app_name)
    except StreamscribeError as exc:
        raise fail(str(exc)) from None
    err.print(
        f"decode pool {settings.ray_app_name!r} " + ("removed" if removed else "was not running")
    )
