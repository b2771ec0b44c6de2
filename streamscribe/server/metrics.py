"""Prometheus metrics for one server: sessions, decode queue and batches, latency, errors, audio.

Each app owns its registry (so several apps in one process, as in tests, never collide);
`GET /metrics` renders it in the Prometheus text format. `GET /v1/metrics` keeps a JSON summary
for people and the benchmark.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.sessions_active = Gauge(
            "streamscribe_sessions_active", "Open streaming sessions", ["protocol"], registry=r
        )
        self.sessions_total = Counter(
            "streamscribe_sessions_total", "Sessions started", ["protocol"], registry=r
        )
        self.session_ends = Counter(
            "streamscribe_session_ends_total", "Sessions ended, by reason", ["reason"], registry=r
        )
        self.errors = Counter(
            "streamscribe_errors_total", "Error closes sent, by close code", ["code"], registry=r
        )
        self.audio_seconds = Counter(
            "streamscribe_audio_seconds_total", "Audio received", ["protocol"], registry=r
        )
        self.decode_queue = Gauge(
            "streamscribe_decode_queue_depth", "Decode requests waiting", registry=r
        )
        self.batch_size = Histogram(
            "streamscribe_decode_batch_size",
            "Requests per model call",
            buckets=(1, 2, 3, 4, 6, 8, 12, 16, 32),
            registry=r,
        )
        self.decode_seconds = Histogram(
            "streamscribe_decode_seconds",
            "Model time per batch",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.latency = Histogram(
            "streamscribe_decode_latency_seconds",
            "Request to result (queue + model), by kind: partial, eager, final",
            ["kind"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.lag = Gauge(
            "streamscribe_session_lag_seconds_max",
            "Largest audio lag of an open session",
            registry=r,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
