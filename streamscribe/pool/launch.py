"""What `streamscribe pool up` / `pool down` do: deploy or remove the decode pool on a cluster.

Why it exists apart from the CLI: it is the one place that knows how the Serve application is
started (no HTTP proxy: front-ends reach replicas through deployment handles), so the CLI, the
benchmark and the tests start the same pool. Errors name the fix and never wait unbounded.
"""

from __future__ import annotations

import logging
import time

from streamscribe.config import Settings
from streamscribe.pool.client import PoolUnavailable, _call, app_status, connect_ray
from streamscribe.pool.deployment import PoolOptions, build_app

log = logging.getLogger("streamscribe.pool")


def pool_up(
    settings: Settings,
    options: PoolOptions,
    address: str | None,
    app_name: str,
    start_timeout_s: float = 600.0,
    blocking: bool = False,
) -> str:
    """Deploy the pool as `app_name` and wait until it serves; returns its status line.

    `blocking`: stay in the foreground afterwards (until interrupted, then remove the pool)."""
    connect_ray(address)
    from ray import serve

    serve.start(proxy_location="Disabled")
    app = build_app(settings, options)
    fix = (
        "check the model (--model), the replicas' memory (fewer --replicas per node, a smaller "
        "model) and free CPUs/GPUs (`ray status`); `streamscribe pool down` removes the pool"
    )
    try:  # serve.run returns once every replica is up, raises if one fails to start
        _call(
            lambda: serve.run(app, name=app_name, route_prefix=None, blocking=False),
            start_timeout_s,
        )
    except TimeoutError:
        status, message, _ = _call(lambda: app_status(app_name), 30.0)
        raise PoolUnavailable(
            f"the decode pool is still {status} after {start_timeout_s:.0f} s "
            f"({message or 'replicas not placed'}): {fix}"
        ) from None
    except Exception as exc:
        raise PoolUnavailable(f"the decode pool failed to start: {exc}; {fix}") from None
    line = (
        f"decode pool {app_name!r} running: {settings.model} ({settings.backend}, "
        f"{settings.device}), {options.replicas} replica(s)"
        + (f" autoscaled up to {options.max_replicas}" if options.max_replicas else "")
        + f", batches of up to {options.max_batch_size} (wait {options.batch_wait_ms:g} ms)"
    )
    if blocking:
        log.info("%s; Ctrl-C removes it", line)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            serve.delete(app_name)
    return line


def pool_down(address: str | None, app_name: str) -> bool:
    """Remove the pool `app_name`; False when there was none."""
    connect_ray(address)
    from ray import serve

    status, _, _ = _call(lambda: app_status(app_name), 30.0)
    if status == "NOT_STARTED":
        return False
    serve.delete(app_name)
    return True
