"""The durable store: API keys, temporary tokens, sessions, final turns, usage.

SQLAlchemy 2 async over SQLite (default, `<data_dir>/streamscribe.db`) or PostgreSQL (by URL),
schema by the Alembic migrations shipped in `migrations/`. Everything above the store uses
`Store` and the dataclasses re-exported here; tables and SQL stay inside this package.
"""

from streamscribe.store.records import (
    ABNORMAL,
    CallJobInfo,
    KeyInfo,
    SessionDetail,
    SessionInfo,
    TokenGrant,
    TurnRecord,
    UploadJobInfo,
    UsageRow,
)
from streamscribe.store.repository import Store

__all__ = [
    "ABNORMAL",
    "CallJobInfo",
    "KeyInfo",
    "SessionDetail",
    "SessionInfo",
    "Store",
    "TokenGrant",
    "TurnRecord",
    "UploadJobInfo",
    "UsageRow",
]
