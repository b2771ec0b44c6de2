"""Upload and call-transcription jobs are kept in the store, so a restart resumes or ends them.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TIMESTAMP = sa.DateTime(timezone=True)
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "upload_jobs",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("key_id", sa.String(36), nullable=True),
        sa.Column("filename", sa.String(200), nullable=False),
        sa.Column("params", JSON, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("audio_seconds", sa.Float(), nullable=False),
        sa.Column("done_seconds", sa.Float(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("upload_path", sa.Text(), nullable=True),
        sa.Column("created", TIMESTAMP, nullable=False),
        sa.Column("finished", TIMESTAMP, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_upload_jobs"),
    )
    op.create_index("ix_upload_jobs_key_id", "upload_jobs", ["key_id"])
    op.create_index("ix_upload_jobs_finished", "upload_jobs", ["finished"])
    op.create_table(
        "call_jobs",
        sa.Column("key_id", sa.String(36), nullable=False),
        sa.Column("call_id", sa.String(128), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("session_id", sa.String(36), nullable=True),
        sa.Column("request", JSON, nullable=False),
        sa.Column("result", JSON, nullable=True),
        sa.Column("created", TIMESTAMP, nullable=False),
        sa.Column("ended", TIMESTAMP, nullable=True),
        sa.PrimaryKeyConstraint("key_id", "call_id", name="pk_call_jobs"),
    )


def downgrade() -> None:
    op.drop_table("call_jobs")
    op.drop_index("ix_upload_jobs_finished", table_name="upload_jobs")
    op.drop_index("ix_upload_jobs_key_id", table_name="upload_jobs")
    op.drop_table("upload_jobs")
