"""Initial schema: api_keys, tokens, sessions, turns, usage.

Revision ID: 0001
Revises:
Create Date: 2026-05-20
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TIMESTAMP = sa.DateTime(timezone=True)
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("secret_hash", sa.String(64), nullable=False),
        sa.Column("created", TIMESTAMP, nullable=False),
        sa.Column("revoked_at", TIMESTAMP, nullable=True),
        sa.Column("max_streams", sa.Integer(), nullable=True),
        sa.Column("max_audio_hours_per_day", sa.Float(), nullable=True),
        sa.Column("max_session_seconds", sa.Integer(), nullable=True),
        sa.Column("record_audio", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_api_keys"),
        sa.UniqueConstraint("secret_hash", name="uq_api_keys_secret_hash"),
    )
    op.create_index(
        "ix_api_keys_name_active",
        "api_keys",
        ["name"],
        unique=True,
        sqlite_where=sa.text("revoked_at IS NULL"),
        postgresql_where=sa.text("revoked_at IS NULL"),
    )

    op.create_table(
        "tokens",
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("key_id", sa.String(36), nullable=False),
        sa.Column("created", TIMESTAMP, nullable=False),
        sa.Column("expires", TIMESTAMP, nullable=False),
        sa.Column("used", TIMESTAMP, nullable=True),
        sa.Column("max_session_seconds", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("token_hash", name="pk_tokens"),
        sa.ForeignKeyConstraint(
            ["key_id"], ["api_keys.id"], name="fk_tokens_key_id_api_keys", ondelete="CASCADE"
        ),
    )
    op.create_index("ix_tokens_expires", "tokens", ["expires"])

    op.create_table(
        "sessions",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("key_id", sa.String(36), nullable=True),
        sa.Column("protocol", sa.String(32), nullable=False),
        sa.Column("params", JSON, nullable=False),
        sa.Column("started", TIMESTAMP, nullable=False),
        sa.Column("ended", TIMESTAMP, nullable=True),
        sa.Column("audio_seconds", sa.Float(), nullable=False),
        sa.Column("end_reason", sa.String(32), nullable=True),
        sa.Column("recording_path", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_sessions"),
        sa.ForeignKeyConstraint(
            ["key_id"], ["api_keys.id"], name="fk_sessions_key_id_api_keys", ondelete="SET NULL"
        ),
    )
    op.create_index("ix_sessions_key_id", "sessions", ["key_id"])
    op.create_index("ix_sessions_started", "sessions", ["started"])

    op.create_table(
        "turns",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("session_id", sa.String(36), nullable=False),
        sa.Column("channel", sa.Integer(), nullable=False),
        sa.Column("turn_order", sa.Integer(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("words", JSON, nullable=False),
        sa.Column("speaker", sa.String(64), nullable=True),
        sa.Column("language", sa.String(16), nullable=True),
        sa.Column("language_confidence", sa.Float(), nullable=True),
        sa.Column("start_ms", sa.Integer(), nullable=False),
        sa.Column("end_ms", sa.Integer(), nullable=False),
        sa.Column("created", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_turns"),
        sa.ForeignKeyConstraint(
            ["session_id"], ["sessions.id"], name="fk_turns_session_id_sessions", ondelete="CASCADE"
        ),
        # also the index on session_id (its leading column)
        sa.UniqueConstraint(
            "session_id", "channel", "turn_order", name="uq_turns_session_id_channel_turn_order"
        ),
    )

    op.create_table(
        "usage",
        sa.Column("key_id", sa.String(36), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("audio_seconds", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("key_id", "day", name="pk_usage"),
    )


def downgrade() -> None:
    op.drop_table("usage")
    op.drop_table("turns")
    op.drop_index("ix_sessions_started", table_name="sessions")
    op.drop_index("ix_sessions_key_id", table_name="sessions")
    op.drop_table("sessions")
    op.drop_index("ix_tokens_expires", table_name="tokens")
    op.drop_table("tokens")
    op.drop_index("ix_api_keys_name_active", table_name="api_keys")
    op.drop_table("api_keys")
