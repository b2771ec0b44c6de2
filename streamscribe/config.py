"""One place for configuration: `Settings`, read from STREAMSCRIBE_* environment variables.

CLI flags override fields by constructing `Settings(**overrides)`. No other module reads the
environment; everything receives a `Settings` (or the values it needs) from its caller.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="STREAMSCRIBE_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 8000
    data_dir: Path = Path("data")

    # model
    model: str = "tiny.en"
    backend: str = "ct2"  # ct2: CTranslate2 (CPU, CUDA 12); torch: PyTorch (CPU, any CUDA)
    device: str = "cpu"
    compute_type: str = "int8"
    cpu_threads: int = 0  # 0: all cores
    decode_workers: int = 1  # parallel model calls (ctranslate2 inter_threads)
    # a session that needs another language than English (or detection, or translation) while
    # the default model is English-only gets this one, loaded on first use
    multilingual_model: str = "base"
    models: list[str] = []  # further models a session may name (speech_model / model)
    language_switch_confidence: float = 0.7  # a turn changes the session's language only above
    # where decodes run: local (this process's model) or ray (a shared Ray Serve decode pool
    # started with `streamscribe pool up`, reached at ray_address, application ray_app_name)
    decoder: str = "local"
    ray_address: str | None = None  # None: RAY_ADDRESS or the local cluster ("auto")
    ray_app_name: str = "streamscribe"

    # scheduler / streaming policy
    max_batch_size: int = 8
    partial_interval_ms: int = 500
    max_lag_ms: int = 3000  # beyond this a session degrades (fewer partials, shorter windows)
    max_sessions: int = 32
    max_queue_delay_ms: int = 2000  # decode queue delay above which new sessions are refused
    final_beam_size: int = 5
    vad_threshold: float = 0.5

    # session limits
    max_session_seconds: int = 10800
    idle_timeout_seconds: float = 120.0  # no audio nor message for this long ends a session

    # platform: storage, access, retention, shutdown
    database_url: str | None = None  # default: SQLite file <data_dir>/streamscribe.db
    admin_key: str | None = None  # protects /v1/admin/*; unset: the admin API is off
    insecure_no_auth: bool = False  # serve without keys on a non-loopback address
    record_audio: bool = True  # write each session's audio to <data_dir>/recordings
    retention_days: float | None = None  # delete sessions and recordings older than this
    shutdown_grace_seconds: float = 30.0
    max_frame_bytes: int = 1 << 20  # larger WebSocket messages are refused (close 1009)

    log_level: str = Field(default="info")

    @property
    def model_cache_dir(self) -> Path:
        return self.data_dir / "models"
