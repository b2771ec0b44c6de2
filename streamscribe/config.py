"""One place for configuration: `Settings`, read from STREAMSCRIBE_* environment variables.

CLI flags override fields by constructing `Settings(**overrides)`. No other module reads the
environment; everything receives a `Settings` (or the values it needs) from its caller.

`Settings` is also the one source of `streamscribe serve`'s flags: every field becomes a flag
named after it (`data_dir` -> `--data-dir`) whose help is the field's description and whose
shown default is the field's default (`streamscribe.cli.settings_flags` builds them). A field
can say otherwise in `json_schema_extra`: `{"flag": "--other-name"}` spells the flag
differently, `ENV_ONLY` keeps it an environment variable without a flag. So a new setting is a
new field with a description, and nothing else.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# `json_schema_extra` of a field that is an environment variable only (no `serve` flag)
ENV_ONLY: dict[str, Any] = {"cli": False}


def decode_parallelism(
    backend: str, device: str, workers: int, threads: int, cores: int
) -> tuple[int, int]:
    """(parallel model calls, threads per call) for the settings' 0 = automatic values.

    On 2 cores two single-threaded CTranslate2 calls measured better than one call with two
    threads at every load (12 streams: lag 5.3 s instead of 12.4 s; one stream: the same
    latency with 12 % less CPU): tiny matrices parallelise poorly inside one call. The torch
    backend and GPUs keep one call at a time."""
    if workers <= 0:
        workers = min(max(1, cores), 4) if backend == "ct2" and device == "cpu" else 1
    if threads <= 0 and backend == "ct2" and device == "cpu":
        threads = max(1, cores // workers)
    return workers, threads


def decode_batch_size(backend: str, device: str, max_batch_size: int) -> int:
    """The most requests in one model call for the setting's 0 = automatic value.

    CTranslate2 on the CPU: 1. A CPU batch costs at least the sum of its requests (every window
    is padded to the batch's longest, and finals and partials run as sub-batches one after the
    other), and every request waits for the whole batch: at 8 streams on 2 cores batches of up
    to 8 held the lag at 3.9 s and first partials at 1.07 s P95, one request per call at 2.4 s
    and 0.63 s (`bench/stream_bench.py`, README). A GPU, where a batch costs little more than
    one request, and the torch backend (whose decoder verifies drafts of a batch in one pass)
    batch up to 8."""
    if max_batch_size > 0:
        return max_batch_size
    return 1 if backend == "ct2" and device == "cpu" else 8


def available_cores() -> int:
    """The cores this process may run on (its affinity, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="STREAMSCRIBE_", extra="ignore")

    @model_validator(mode="after")
    def _resolve_parallelism(self) -> Settings:
        workers, threads = decode_parallelism(
            self.backend, self.device, self.decode_workers, self.cpu_threads, available_cores()
        )
        self.decode_workers, self.cpu_threads = workers, threads
        self.max_batch_size = decode_batch_size(self.backend, self.device, self.max_batch_size)
        return self

    host: str = Field(default="127.0.0.1", description="Interface to listen on.")
    port: int = Field(default=8000, description="TCP port to listen on.")
    data_dir: Path = Field(
        default=Path("data"),
        description="Directory for the database, recordings and assembled models.",
    )

    # TLS (streamscribe.server.tls): HTTPS and WSS on the same port instead of HTTP and WS
    ssl_certfile: Path | None = Field(
        default=None,
        description="Serve HTTPS/WSS with this PEM certificate (and its chain); needs "
        "--ssl-keyfile.",
    )
    ssl_keyfile: Path | None = Field(
        default=None, description="The unencrypted PEM private key of --ssl-certfile."
    )
    tls: str | None = Field(
        default=None,
        description="self-signed: serve HTTPS/WSS with a development certificate for localhost, "
        "made once in <data-dir>/tls; prints how to trust it (NODE_EXTRA_CA_CERTS, SSL_CERT_FILE, "
        "--ca-file). Not with --ssl-certfile.",
    )

    # model
    model: str = Field(
        default="tiny.en", description="Model name (tiny.en, base, small) or a model directory."
    )
    backend: str = Field(
        default="ct2",
        description="Model engine: ct2 (CTranslate2; CPU or CUDA 12) or torch (PyTorch: CUDA "
        "graphs on any CUDA version PyTorch supports; needs the gpu extra).",
    )
    torch_encoder: str = Field(
        default="auto",
        description="Encoder of the torch backend: auto (CTranslate2's float32 encoder on the "
        "CPU where ctranslate2 is installed: cheaper, same words), torch, or ct2.",
        json_schema_extra=ENV_ONLY,
    )
    device: str = Field(default="cpu", description="Where the model runs: cpu or cuda.")
    compute_type: str = Field(
        default="int8", description="CTranslate2 compute type, e.g. int8, int8_float16, float16."
    )
    cpu_threads: int = Field(
        default=0,
        ge=0,
        description="Threads each model call may use on the CPU (0: the cores shared evenly "
        "among decode_workers).",
    )
    blas_threads: int = Field(
        default=1,
        ge=0,
        description="Threads numpy's BLAS may use (features, alignment). 1: its idle threads "
        "no longer busy-wait beside the decoders (CPU per audio second 0.37 -> 0.22 on 2 "
        "cores, README); 0: leave BLAS as it is.",
        json_schema_extra=ENV_ONLY,
    )
    decode_workers: int = Field(
        default=0,
        ge=0,
        description="Model calls that may run in parallel (CTranslate2 inter_threads). 0: one "
        "per core, at most 4, for CTranslate2 on the CPU (on 2 cores two single-threaded calls "
        "beat one two-threaded call: README, Measured figures); 1 on a GPU and for the torch "
        "backend.",
        json_schema_extra=ENV_ONLY,
    )
    multilingual_model: str = Field(
        default="base",
        description="Model for a session that needs another language than English (or "
        "detection, or translation) while the default model is English-only; loaded on first "
        "use. Empty: such sessions are refused.",
        json_schema_extra=ENV_ONLY,
    )
    models: list[str] = Field(
        default=[],
        description="Further models a session may name (speech_model / model), "
        'as a JSON list: ["small"].',
        json_schema_extra=ENV_ONLY,
    )
    decoder: str = Field(
        default="local",
        description="Where decodes run: local (the model in this process) or ray (a shared "
        "decode pool started with `streamscribe pool up`; needs the pool extra).",
    )
    ray_address: str | None = Field(
        default=None,
        description="Address of the Ray cluster (head node host:port, e.g. 10.0.0.5:6379); "
        "default: RAY_ADDRESS or the cluster on this machine.",
    )
    ray_app_name: str = Field(
        default="streamscribe", description="Name of the decode pool's Ray Serve application."
    )

    # scheduler / streaming policy
    max_batch_size: int = Field(
        default=0,
        description="Most decode requests batched into one model call. 0: 1 for CTranslate2 "
        "on the CPU (a CPU batch costs the sum of its requests and each waits for all), 8 "
        "otherwise.",
    )
    partial_interval_ms: int = Field(
        default=500,
        description="Shortest interval (ms) between partial decodes of a growing turn "
        "(longer when decodes take longer).",
        json_schema_extra=ENV_ONLY,
    )
    # back-pressure, not an error: while a session's decode lag exceeds this, the session loop
    # stops reading that client's socket until decoding catches up (server/session_loop.py)
    max_lag_ms: int = Field(
        default=3000,
        description="Decode lag (ms) above which the server stops reading a session's audio "
        "until decoding catches up, so a client sending faster than real time waits.",
        json_schema_extra=ENV_ONLY,
    )
    max_sessions: int = Field(
        default=32, description="Concurrent sessions accepted; more are refused as busy."
    )
    max_queue_delay_ms: int = Field(
        default=2000,
        description="Decode queue delay (ms) above which new sessions are refused as busy.",
        json_schema_extra=ENV_ONLY,
    )
    final_beam_size: int = Field(
        default=5, description="Beam size of each turn's final decode.", json_schema_extra=ENV_ONLY
    )
    vad_threshold: float = Field(
        default=0.5,
        description="Speech probability above which voice activity detection hears speech.",
        json_schema_extra=ENV_ONLY,
    )

    # session limits
    max_session_seconds: int = Field(
        default=10800,
        description="Longest session, in seconds (a key or the client may ask for less).",
        json_schema_extra=ENV_ONLY,
    )
    idle_timeout_seconds: float = Field(
        default=120.0,
        description="A session that sends no audio nor message for this long is ended.",
        json_schema_extra=ENV_ONLY,
    )

    # fair shares under load: between keys, idle sessions, metered quotas (issue 18)
    max_streams_per_key: int = Field(
        default=16,
        description="Concurrent sessions one API key may hold when the key sets no max_streams "
        "of its own, so that one key cannot take every slot of max_sessions (0: no limit; "
        "a key's own max_streams, set with `keys create --max-streams`, wins).",
        json_schema_extra=ENV_ONLY,
    )
    fair_batch_share: int = Field(
        default=1,
        description="While sessions of several keys are decoding, the most decode requests of "
        "one key in one model batch (0: an even share of max_batch_size). 1 suits a CPU, where "
        "a batch costs about the sum of its requests, so another key's request never waits "
        "behind one key's whole batch; on a GPU, where batching is nearly free, use 0.",
        json_schema_extra=ENV_ONLY,
    )
    fair_stream_speed: float = Field(
        default=1.0,
        description="While sessions of more than one key are live, the fastest a stream may "
        "send audio, in times real time, once it is fair_stream_burst_seconds ahead of real "
        "time (the server stops reading its socket meanwhile); 0: no pacing.",
        json_schema_extra=ENV_ONLY,
    )
    fair_stream_burst_seconds: float = Field(
        default=10.0,
        description="Audio seconds a stream may run ahead of real time before "
        "fair_stream_speed paces it.",
        json_schema_extra=ENV_ONLY,
    )
    idle_timeout_before_audio_seconds: float = Field(
        default=30.0,
        description="A session that has sent no audio yet is ended after this long without a "
        "message (idle_timeout_seconds applies once audio has come).",
        json_schema_extra=ENV_ONLY,
    )
    evict_idle_after_seconds: float = Field(
        default=5.0,
        description="When the server is at max_sessions, a new session ends the session that "
        "has been quiet the longest without ever sending audio, if it has been quiet this "
        "long, instead of being refused (0: never end one).",
        json_schema_extra=ENV_ONLY,
    )

    # platform: storage, access, retention, shutdown
    database_url: str | None = Field(
        default=None,
        description="Database URL, e.g. postgresql+asyncpg://user:pw@host/db "
        "(default: SQLite in the data directory).",
    )
    admin_key: str | None = Field(
        default=None,
        description="Secret that protects the admin API /v1/admin; unset: the admin API is off. "
        "Prefer STREAMSCRIBE_ADMIN_KEY: flags show in process listings.",
    )
    insecure_no_auth: bool = Field(
        default=False,
        description="Serve without API keys even on a non-loopback address (anyone who can "
        "reach it may transcribe).",
    )
    record_audio: bool = Field(
        default=True,
        description="Write each session's audio to <data_dir>/recordings.",
        json_schema_extra=ENV_ONLY,
    )
    retention_days: float | None = Field(
        default=None,
        description="Delete sessions, transcripts and recordings older than this.",
    )
    shutdown_grace_seconds: float = Field(
        default=30.0,
        description="On SIGTERM/SIGINT, how long open sessions get to send their last turn.",
        json_schema_extra=ENV_ONLY,
    )
    max_frame_bytes: int = Field(
        default=1 << 20,
        description="Largest WebSocket message accepted; larger ones close with 1009.",
        json_schema_extra=ENV_ONLY,
    )

    # hostile input: limits checked before any work is done for a request (issue 18). Defaults
    # sit far above what a real browser, SDK or an hour-long 48 kHz stereo upload needs.
    max_request_head_bytes: int = Field(
        default=64 * 1024,
        description="Largest HTTP request head (request line and headers together, WebSocket "
        "handshakes included); a larger one is refused with 431 before it is read further.",
        json_schema_extra=ENV_ONLY,
    )
    max_request_line_bytes: int = Field(
        default=32 * 1024,
        description="Longest request target (path and query); a longer one is refused with 414.",
        json_schema_extra=ENV_ONLY,
    )
    max_request_headers: int = Field(
        default=100,
        description="Most header fields in one request; more are refused with 431.",
        json_schema_extra=ENV_ONLY,
    )
    request_head_timeout_seconds: float = Field(
        default=10.0,
        description="Time a client has to send a whole request head (and so to begin a "
        "WebSocket handshake) once it connects or starts its next request; slower ones are "
        "disconnected.",
        json_schema_extra=ENV_ONLY,
    )
    max_upload_bytes: int = Field(
        default=2 * 1024**3,
        description="Largest uploaded file (POST /v1/transcripts, Deepgram POST /v1/listen); "
        "larger ones are refused with 413.",
        json_schema_extra=ENV_ONLY,
    )
    max_upload_seconds: float = Field(
        default=10800.0,
        description="Longest decoded audio of an upload, in seconds (summed over the channels "
        "kept apart with multichannel); checked from the file's header before decoding and "
        "again while decoding; longer ones are refused with 413.",
        json_schema_extra=ENV_ONLY,
    )
    upload_min_sample_rate: int = Field(
        default=4000,
        description="Lowest sample rate (Hz) an uploaded file may declare; lower ones (which "
        "would decode to hours of audio from a few bytes) are refused with 400.",
        json_schema_extra=ENV_ONLY,
    )
    upload_max_sample_rate: int = Field(
        default=384000,
        description="Highest sample rate (Hz) an uploaded file may declare.",
        json_schema_extra=ENV_ONLY,
    )
    max_active_uploads: int = Field(
        default=4,
        description="Uploads (POST /v1/transcripts) being received, decoded or transcribed at "
        "once; a slot is taken when the body starts arriving, more are refused with 503.",
        json_schema_extra=ENV_ONLY,
    )
    upload_stall_seconds: float = Field(
        default=30.0,
        description="An upload whose body sends nothing for this long is refused with 408 and "
        "its slot freed.",
        json_schema_extra=ENV_ONLY,
    )
    public_metrics: bool = Field(
        default=True,
        description="Serve /metrics and /v1/metrics without a key; off: they need an API key "
        "or the admin key (a scraper sends it as a bearer token).",
    )
    public_docs: bool = Field(
        default=True,
        description="Serve the API's documentation (/docs, /redoc, /openapi.json); off: not "
        "served at all.",
    )

    log_level: str = Field(default="info", description="Log level: debug, info, warning or error.")

    @property
    def model_cache_dir(self) -> Path:
        return self.data_dir / "models"
