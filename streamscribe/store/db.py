"""Connecting to the database and bringing its schema up to date.

One async engine per process: SQLite (aiosqlite) in `<data_dir>/streamscribe.db` unless a URL
names another database; PostgreSQL through asyncpg. SQLite connections get WAL journaling (readers
never block the writer), foreign keys, full sync of each commit (a committed turn survives a killed
process and a power cut) and a busy timeout so concurrent writers queue instead of failing.

Migrations are Alembic's, shipped in the package (`migrations/`), and run programmatically with
`upgrade head` at start, on the engine's own connection, so no alembic.ini is needed. To write a
new revision during development::

    from alembic import command
    from streamscribe.store.db import alembic_config
    command.revision(alembic_config("sqlite:///dev.db"), "what changed", autogenerate=True)

(after upgrading dev.db to head). Repository logic lives in `repository.py`, the schema in
`tables.py`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

DB_FILENAME = "streamscribe.db"
SCRIPT_LOCATION = "streamscribe.store:migrations"

_ASYNC_DRIVERS = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+asyncpg"}


def database_url(url: str | None, data_dir: Path) -> URL:
    """The async URL to connect to: the default SQLite file, or `url` with an async driver.

    `sqlite:///x.db`, `postgres://…` and `postgresql://…` are accepted and given aiosqlite and
    asyncpg; a URL that already names a driver is used as it is.
    """
    if not url:
        return make_url(f"sqlite+aiosqlite:///{Path(data_dir).resolve() / DB_FILENAME}")
    if url.startswith("postgres://"):
        url = "postgresql://" + url.removeprefix("postgres://")
    parsed = make_url(url)
    if parsed.drivername in _ASYNC_DRIVERS:
        parsed = parsed.set(drivername=_ASYNC_DRIVERS[parsed.drivername])
    return parsed


def _json_dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=10000")
    finally:
        cursor.close()


def create_engine(url: URL) -> AsyncEngine:
    """An async engine for `url`; SQLite files get their directory and connection pragmas."""
    kwargs: dict[str, Any] = {"json_serializer": _json_dumps}
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:":
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    else:
        kwargs["pool_pre_ping"] = True
    engine = create_async_engine(url, **kwargs)
    if url.get_backend_name() == "sqlite":
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    return engine


def alembic_config(url: str | None = None, connection: Connection | None = None) -> Any:
    """An Alembic `Config` for the shipped migrations, with no ini file behind it."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", SCRIPT_LOCATION)
    if url is not None:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def _upgrade_head(connection: Connection) -> None:
    from alembic import command

    command.upgrade(alembic_config(connection=connection), "head")


async def migrate(engine: AsyncEngine) -> None:
    """Bring the schema to the newest revision (a no-op when it is there already)."""
    async with engine.begin() as connection:
        await connection.run_sync(_upgrade_head)
