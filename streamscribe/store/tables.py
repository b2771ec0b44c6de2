"""The schema as SQLAlchemy Core tables: what the repository queries and Alembic compares against.

The migrations under `migrations/versions/` create this schema step by step and are the only
thing that changes a database; this module is the current picture of it, used for queries and
for `alembic revision --autogenerate`. Keep the two in step: a change here needs a new revision.

Seven tables: api_keys (hashes only), tokens (single-use, hashed), sessions, turns (one row per
final turn, written as it becomes final), usage (audio seconds per key per UTC day), upload_jobs
(uploads accepted and not yet transcribed survive a restart) and call_jobs (call-transcription
jobs, so a restart reports the calls it cut as ended).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect

ANONYMOUS = ""
"""usage.key_id of sessions without a key (a primary key column cannot hold NULL)."""


class UTCDateTime(sa.TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes in, timezone-aware UTC datetimes out, on every dialect.

    PostgreSQL keeps `timestamptz`; SQLite has no time zone type, so values are stored as naive
    UTC text (which also keeps its string comparisons in time order).
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: the store takes timezone-aware datetimes")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):  # a value that bypassed the type (raw SQL, server default)
            value = datetime.fromisoformat(value)
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


JSONType = sa.JSON().with_variant(JSONB(), "postgresql")

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("prefix", sa.String(16), nullable=False),
    sa.Column("secret_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("created", UTCDateTime(), nullable=False),
    sa.Column("revoked_at", UTCDateTime(), nullable=True),
    sa.Column("max_streams", sa.Integer(), nullable=True),
    sa.Column("max_audio_hours_per_day", sa.Float(), nullable=True),
    sa.Column("max_session_seconds", sa.Integer(), nullable=True),
    sa.Column("record_audio", sa.Boolean(), nullable=False),
    # a name is unique among keys still in use, so `revoke <name>` is never ambiguous
    sa.Index(
        "ix_api_keys_name_active",
        "name",
        unique=True,
        sqlite_where=sa.text("revoked_at IS NULL"),
        postgresql_where=sa.text("revoked_at IS NULL"),
    ),
)

tokens = sa.Table(
    "tokens",
    metadata,
    sa.Column("token_hash", sa.String(64), primary_key=True),
    sa.Column(
        "key_id", sa.String(36), sa.ForeignKey("api_keys.id", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("created", UTCDateTime(), nullable=False),
    sa.Column("expires", UTCDateTime(), nullable=False, index=True),
    sa.Column("used", UTCDateTime(), nullable=True),
    sa.Column("max_session_seconds", sa.Integer(), nullable=False),
)

sessions = sa.Table(
    "sessions",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column(
        "key_id",
        sa.String(36),
        sa.ForeignKey("api_keys.id", ondelete="SET NULL"),
        nullable=True,
        index=True,
    ),
    sa.Column("protocol", sa.String(32), nullable=False),
    sa.Column("params", JSONType, nullable=False),
    sa.Column("started", UTCDateTime(), nullable=False, index=True),
    sa.Column("ended", UTCDateTime(), nullable=True),
    sa.Column("audio_seconds", sa.Float(), nullable=False),
    sa.Column("end_reason", sa.String(32), nullable=True),
    sa.Column("recording_path", sa.Text(), nullable=True),
)

turns = sa.Table(
    "turns",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column(
        "session_id",
        sa.String(36),
        sa.ForeignKey("sessions.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("channel", sa.Integer(), nullable=False),
    sa.Column("turn_order", sa.Integer(), nullable=False),
    sa.Column("text", sa.Text(), nullable=False),
    sa.Column("words", JSONType, nullable=False),
    sa.Column("speaker", sa.String(64), nullable=True),
    sa.Column("language", sa.String(16), nullable=True),
    sa.Column("language_confidence", sa.Float(), nullable=True),
    sa.Column("translation", sa.Text(), nullable=True),
    sa.Column("start_ms", sa.Integer(), nullable=False),
    sa.Column("end_ms", sa.Integer(), nullable=False),
    sa.Column("created", UTCDateTime(), nullable=False),
    # one row per turn: a re-sent (formatted) final replaces the row; it also indexes session_id
    sa.UniqueConstraint("session_id", "channel", "turn_order"),
)

usage = sa.Table(
    "usage",
    metadata,
    sa.Column("key_id", sa.String(36), primary_key=True),  # ANONYMOUS for no key
    sa.Column("day", sa.Date(), primary_key=True),
    sa.Column("audio_seconds", sa.Float(), nullable=False),
)

upload_jobs = sa.Table(
    "upload_jobs",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),  # also the stored session's id
    sa.Column("key_id", sa.String(36), nullable=True, index=True),
    sa.Column("filename", sa.String(200), nullable=False),
    sa.Column("params", JSONType, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("audio_seconds", sa.Float(), nullable=False),
    sa.Column("done_seconds", sa.Float(), nullable=False),
    sa.Column("error", sa.Text(), nullable=True),
    sa.Column("upload_path", sa.Text(), nullable=True),  # the saved upload, until the job ends
    sa.Column("created", UTCDateTime(), nullable=False),
    sa.Column("finished", UTCDateTime(), nullable=True, index=True),
)

call_jobs = sa.Table(
    "call_jobs",
    metadata,
    sa.Column("key_id", sa.String(36), primary_key=True),  # ANONYMOUS for no key
    sa.Column("call_id", sa.String(128), primary_key=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("session_id", sa.String(36), nullable=True),
    sa.Column("request", JSONType, nullable=False),  # the job as created (public fields)
    sa.Column("result", JSONType, nullable=True),  # resultInformation once ended by a restart
    sa.Column("created", UTCDateTime(), nullable=False),
    sa.Column("ended", UTCDateTime(), nullable=True),
)
