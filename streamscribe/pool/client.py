"""`RayPoolTranscriber`: a front-end's `Transcriber` that decodes on the shared Ray Serve pool.

Why it exists: the engine's scheduler only knows `transcribe_batch`; this class keeps that
contract while the work happens on remote replicas, so nothing else in the engine changes. It
owns the pool's failure policy: every Ray call has a timeout (a wrong address or a pool that is
still starting is a clear error, never a hang); a request whose replica died, ran out of memory
or timed out is sent again, a bounded number of times, and Serve routes it to a live replica;
when the pool stays unreachable the batch fails with an error that names the fix (the runner
turns it into the session's Error event, and turns already stored are kept).
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import time
from typing import Any

from streamscribe.config import Settings
from streamscribe.engine.decoding import DecodeRequest, DecodeResult
from streamscribe.errors import StreamscribeError

log = logging.getLogger("streamscribe.pool")

CONNECT_TIMEOUT_S = 30.0
INFO_TIMEOUT_S = 30.0
HEALTH_TTL_S = 3.0


class PoolUnavailable(StreamscribeError):
    """The decode pool cannot be reached or is not serving; the message names the fix."""


def _retryable() -> tuple[type[BaseException], ...]:
    import ray.exceptions as rx

    kinds: list[type[BaseException]] = [rx.RayActorError, rx.GetTimeoutError, TimeoutError]
    for name in (
        "ActorUnavailableError",
        "OutOfMemoryError",
        "NodeDiedError",
        "WorkerCrashedError",
    ):
        kind = getattr(rx, name, None)
        if kind is not None:
            kinds.append(kind)
    return tuple(kinds)


def connect_ray(address: str | None, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """Join the Ray cluster at `address` as a driver, or fail within `timeout_s` naming the fix."""
    try:
        import ray
    except ImportError:
        raise PoolUnavailable(
            "--decoder ray needs Ray Serve: pip install 'streamscribe[pool]' "
            "(or pip install 'ray[serve]'), or use --decoder local"
        ) from None
    if ray.is_initialized():
        return
    where = address or "auto"
    errors: list[BaseException] = []

    def init() -> None:
        try:
            ray.init(
                address=where,
                namespace="streamscribe",
                ignore_reinit_error=True,
                log_to_driver=False,
                include_dashboard=False,
                logging_level=logging.WARNING,
            )
        except BaseException as exc:  # reported below, with the fix
            errors.append(exc)

    thread = threading.Thread(target=init, name="ray-connect", daemon=True)
    thread.start()
    thread.join(timeout_s)
    fix = (
        "start the cluster (`ray start --head` on the head node) and pass its address, e.g. "
        "--ray-address 10.0.0.5:6379 (STREAMSCRIBE_RAY_ADDRESS)"
    )
    if thread.is_alive():
        raise PoolUnavailable(f"no Ray cluster answered at {where} within {timeout_s:.0f} s: {fix}")
    if errors:
        raise PoolUnavailable(f"cannot join the Ray cluster at {where}: {errors[0]}; {fix}")


def app_status(app_name: str) -> tuple[str, str, int]:
    """(status, message, replicas RUNNING) of the Serve application `app_name`.

    The status is NOT_STARTED when the application is absent.
    """
    from ray import serve

    status = serve.status()
    app = status.applications.get(app_name)
    if app is None:
        return "NOT_STARTED", "", 0
    message = app.message or ""
    running = 0
    for deployment in app.deployments.values():
        if deployment.message:
            message = f"{message} {deployment.message}".strip()
        running += deployment.replica_states.get("RUNNING", 0)
    return str(getattr(app.status, "value", app.status)), message, running


def start_refusal(app_name: str, status: str, message: str, running: int) -> str | None:
    """Why a front-end must not start on the pool in this state (None: it may), naming the fix.

    UNHEALTHY with a replica RUNNING is a pool that serves while Serve replaces a failed replica
    (readiness says ready too): the front-end starts, and says so in its log.
    """
    if status == "RUNNING" or (status == "UNHEALTHY" and running > 0):
        return None
    if status == "NOT_STARTED":
        return (
            f"no decode pool {app_name!r} on this Ray cluster: start it with "
            f"`streamscribe pool up --ray-address ... --app-name {app_name}`"
        )
    if status in ("DEPLOYING", "UPGRADING", "DEPLOYING_OR_UPGRADING"):
        return (
            f"the decode pool {app_name!r} is still starting ({status}): wait until "
            "`serve status` shows it RUNNING, then start the front-end"
        )
    return (
        f"the decode pool {app_name!r} is {status}: {message or 'no detail'}; fix the "
        "pool (see `serve status`, e.g. a replica out of memory: fewer replicas per node "
        "or a smaller model) and run `streamscribe pool up` again"
    )


def _call(fn: Any, timeout_s: float) -> Any:
    """Run `fn()` in a thread, giving up after `timeout_s` (Ray control calls have no timeout)."""
    pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="ray-call")
    try:
        return pool.submit(fn).result(timeout_s)
    finally:
        pool.shutdown(wait=False)


class RayPoolTranscriber:
    """A `Transcriber` whose model replicas are the Ray Serve application `app_name`."""

    def __init__(
        self,
        app_name: str = "streamscribe",
        address: str | None = None,
        model: str | None = None,
        request_timeout_s: float = 30.0,
        retries: int = 4,
        connect_timeout_s: float = CONNECT_TIMEOUT_S,
    ) -> None:
        self.app_name = app_name
        self.request_timeout_s = request_timeout_s
        self.retries = retries
        self.failovers = 0  # requests sent again after a replica failure
        self._health: tuple[float, str | None] = (0.0, None)
        self._pool_down: str | None = None  # set when a batch exhausted its retries
        connect_ray(address, connect_timeout_s)
        self._check_running(connect_timeout_s)
        from ray import serve

        self.handle = serve.get_app_handle(app_name)
        try:
            info = self.handle.info.remote().result(timeout_s=INFO_TIMEOUT_S)
        except Exception as exc:
            raise PoolUnavailable(
                f"the decode pool {app_name!r} did not answer within {INFO_TIMEOUT_S:.0f} s "
                f"({type(exc).__name__}: {exc}); check `ray status` and `serve status`"
            ) from None
        if model is not None and info["model"] != model:
            raise PoolUnavailable(
                f"the decode pool {app_name!r} serves {info['model']}, not {model}: start a pool "
                f"for it (`streamscribe pool up --model {model} --app-name NAME`) and pass "
                "--ray-app-name NAME, or serve the pool's model"
            )
        self.info = info
        self.sample_rate: int = info["sample_rate"]
        self.multilingual: bool = info["multilingual"]
        self.model: str = info["model"]
        log.info("decoding on Ray Serve pool %r (%s, %s)", app_name, self.model, info["device"])

    def _check_running(self, timeout_s: float) -> None:
        try:
            status, message, running = _call(lambda: app_status(self.app_name), timeout_s)
        except concurrent.futures.TimeoutError:
            raise PoolUnavailable(
                f"Ray Serve did not report the pool {self.app_name!r} within {timeout_s:.0f} s"
            ) from None
        refusal = start_refusal(self.app_name, status, message, running)
        if refusal is not None:
            raise PoolUnavailable(refusal)
        if status != "RUNNING":
            log.warning(
                "decode pool %r is %s with %d replica(s) running (%s): starting on them",
                self.app_name, status, running, message or "no detail",
            )  # fmt: skip

    # ---------------------------------------------------------------------------- decoding

    def transcribe_batch(self, requests: list[DecodeRequest]) -> list[DecodeResult]:
        retryable = _retryable()
        responses = [self.handle.decode.remote(r) for r in requests]
        results: list[DecodeResult | None] = [None] * len(requests)
        for i, request in enumerate(requests):
            attempt = 0
            while True:
                try:
                    results[i] = responses[i].result(timeout_s=self.request_timeout_s)
                    break
                except Exception as exc:
                    attempt += 1
                    gone = self._gone()
                    if gone is not None or not isinstance(exc, retryable):
                        self._pool_down = gone or f"{type(exc).__name__}: {exc}"[:300]
                        raise PoolUnavailable(
                            f"decode on the pool {self.app_name!r} failed: {self._pool_down}; "
                            "check `serve status` on the Ray cluster (`streamscribe pool up` "
                            "starts the pool)"
                        ) from exc
                    if attempt > self.retries:
                        self._pool_down = f"{type(exc).__name__}: {exc}"[:300]
                        raise PoolUnavailable(
                            f"the decode pool {self.app_name!r} failed {attempt} times for one "
                            f"request (last: {type(exc).__name__}); check `serve status` on "
                            "the Ray cluster"
                        ) from exc
                    self.failovers += 1
                    log.warning(
                        "decode request failed on a pool replica (%s); sending it again "
                        "(attempt %d of %d)",
                        type(exc).__name__,
                        attempt + 1,
                        self.retries + 1,
                    )
                    time.sleep(min(0.5 * attempt, 2.0))  # the router drops a dead replica
                    responses[i] = self.handle.decode.remote(request)
        self._pool_down = None
        return [r for r in results if r is not None]

    # ------------------------------------------------------------------------------ health

    def _gone(self) -> str | None:
        """Why the pool cannot serve at all now (not deployed, failed), or None."""
        try:
            status, message, _ = _call(lambda: app_status(self.app_name), 10.0)
        except Exception as exc:
            return f"Ray Serve does not answer ({type(exc).__name__})"
        if status in ("NOT_STARTED", "DELETING", "DEPLOY_FAILED"):
            return f"pool {status}" + (f": {message}" if message else "")
        return None

    def unhealthy_reason(self) -> str | None:
        """Why the pool cannot take new sessions now (None: healthy); cached a few seconds."""
        if self._pool_down is not None:
            return f"decode pool unreachable ({self._pool_down})"
        checked, reason = self._health
        if time.monotonic() - checked < HEALTH_TTL_S:
            return reason
        try:
            status, message, running = _call(lambda: app_status(self.app_name), 5.0)
            serving = start_refusal(self.app_name, status, message, running) is None
            reason = None if serving else f"decode pool {status}: {message}".strip()
        except Exception as exc:  # a controller that does not answer is a pool not ready
            reason = f"decode pool status unknown ({type(exc).__name__})"
        self._health = (time.monotonic(), reason)
        return reason


def load_pool_transcriber(settings: Settings) -> RayPoolTranscriber:
    return RayPoolTranscriber(
        app_name=settings.ray_app_name,
        address=settings.ray_address,
        model=settings.model,
    )
