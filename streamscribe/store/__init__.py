"""The durable store: API keys, temporary tokens, sessions, final turns, usage.

SQLAlchemy 2 async over SQLite (default, `<data_dir>/streamscribe.db`) or PostgreSQL (by URL),
schema by the Alembic migrations shipped in `migrations/`. Everything above the store uses
`Store` and the dataclasses re-exported here; tables and SQL stay inside this package.
"""

from streamscribe.store.records import (
    ABNORMAL,
    KeyInfo,
    SessionDetail,
    SessionInfo,
    TokenGrant,
    TurnRecord,
    UsageRow,
)
from streamscribe.store.repository import Store

__all__ = [
    "ABNORMAL",
    "KeyInfo",
    "SessionDetail",
    "SessionInfo",
    "Store",
    "TokenGrant",
    "TurnRecord",
    "UsageRow",
]
