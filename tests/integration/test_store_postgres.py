"""The store's core round trip against a real PostgreSQL (asyncpg).

Uses STREAMSCRIBE_TEST_POSTGRES_URL, or starts a throwaway cluster (see postgres.py); skips only
when PostgreSQL is not installed. Each test gets a database of its own where the role allows.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from postgres import fresh_database, postgres_server

from streamscribe.events import EndReason
from streamscribe.store import ABNORMAL, Store, TokenGrant, TurnRecord, UsageRow
from streamscribe.store.tables import metadata


class Clock:
    def __init__(self) -> None:
        self.t = datetime(2026, 3, 14, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.t

    def advance(self, **delta: float) -> None:
        self.t += timedelta(**delta)


@pytest.fixture(scope="module")
def pg_server() -> Iterator[str]:
    with postgres_server() as url:
        yield url


@pytest.fixture
async def pg_url(pg_server: str) -> AsyncIterator[str]:
    async with fresh_database(pg_server) as url:
        yield url


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def store(pg_url: str, tmp_path: Path, clock: Clock) -> AsyncIterator[Store]:
    s = await Store.open(pg_url, tmp_path, now=clock)
    yield s
    await s.close()


def turn(order: int, text: str, start: int = 0) -> TurnRecord:
    words = [
        {"text": w, "start": start + i * 300, "end": start + i * 300 + 250, "confidence": 0.9}
        for i, w in enumerate(text.split())
    ]
    return TurnRecord(0, order, text, words, "A", "en", 0.97, words[0]["start"], words[-1]["end"])


async def test_migrations_run_on_postgres_and_reopen_is_idempotent(
    pg_url: str, tmp_path: Path
) -> None:
    store = await Store.open(pg_url, tmp_path)
    try:
        assert store.dialect == "postgresql" and await store.ping()
        async with store.engine.connect() as conn:
            tables = set(
                (
                    await conn.execute(
                        sa.text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
                    )
                ).scalars()
            )
            kinds = dict(
                (
                    await conn.execute(
                        sa.text(
                            "SELECT column_name, data_type FROM information_schema.columns"
                            " WHERE table_name = 'sessions'"
                        )
                    )
                ).all()
            )
            diff = await conn.run_sync(
                lambda c: compare_metadata(
                    MigrationContext.configure(c, opts={"compare_type": True}), metadata
                )
            )
        assert diff == []  # the migrations build exactly what tables.py describes
        assert {"api_keys", "tokens", "sessions", "turns", "usage", "alembic_version"} <= tables
        assert kinds["started"] == "timestamp with time zone" and kinds["params"] == "jsonb"
    finally:
        await store.close()
    again = await Store.open(pg_url, tmp_path)
    await again.close()


async def test_keys_and_tokens(store: Store, clock: Clock) -> None:
    key, secret = await store.create_key("pg", max_session_seconds=600)
    async with store.engine.connect() as conn:
        stored = (await conn.execute(sa.text("SELECT * FROM api_keys"))).all()
    assert not any(secret in str(v) for row in stored for v in row)
    found = await store.authenticate(secret)
    assert found is not None and found.id == key.id and found.created.tzinfo is not None
    with pytest.raises(ValueError):
        await store.create_key("pg")

    token = await store.create_token(key.id, expires_in_seconds=60, max_session_seconds=120)
    grants = await asyncio.gather(*(store.redeem_token(token) for _ in range(5)))
    assert [g for g in grants if g is not None] == [TokenGrant(key.id, 120)]

    late = await store.create_token(key.id, expires_in_seconds=60, max_session_seconds=120)
    clock.advance(seconds=61)
    assert await store.redeem_token(late) is None
    orphaned = await store.create_token(key.id, expires_in_seconds=60, max_session_seconds=120)
    assert await store.revoke_key("pg") is True
    assert await store.redeem_token(orphaned) is None
    assert await store.authenticate(secret) is None
    assert await store.count_active_keys() == 0


async def test_sessions_turns_search_and_isolation(store: Store, clock: Clock) -> None:
    a, _ = await store.create_key("a")
    b, _ = await store.create_key("b")
    start = clock()
    params = {"sample_rate": 8000, "encoding": "pcm_mulaw"}
    await store.start_session("s-a", a.id, "assemblyai_v3", params, "/rec/s-a.wav")
    await store.add_turn("s-a", turn(0, "Hello Postgres world"))
    await store.add_turn("s-a", turn(1, "50% off_sale", start=2000))
    await store.add_turn("s-a", turn(1, "50% off_sale.", start=2000))  # replaces turn 1
    clock.advance(hours=1)
    await store.end_session("s-a", EndReason.TERMINATED, 4.25)
    await store.start_session("s-b", b.id, "deepgram", {}, None)
    await store.add_turn("s-b", turn(0, "other words"))
    await store.end_session("s-b", EndReason.CLIENT_GONE, 1.0)

    detail = await store.get_session("s-a", key_id=a.id)
    assert detail is not None
    assert detail.info.params == params and detail.info.turn_count == 2
    assert detail.info.started == start and detail.info.ended == start + timedelta(hours=1)
    assert (detail.info.end_reason, detail.info.audio_seconds) == ("terminated", 4.25)
    assert detail.turns == [turn(0, "Hello Postgres world"), turn(1, "50% off_sale.", start=2000)]
    assert await store.get_session("s-a", key_id=b.id) is None

    page, total = await store.list_sessions()
    assert total == 2 and [s.id for s in page] == ["s-b", "s-a"]
    assert [s.id for s in (await store.list_sessions(text="POSTGRES"))[0]] == ["s-a"]
    assert [s.id for s in (await store.list_sessions(text="0%"))[0]] == ["s-a"]
    assert (await store.list_sessions(text="f_s"))[1] == 1
    assert (await store.list_sessions(text="x%y"))[1] == 0
    page, total = await store.list_sessions(key_id=b.id, since=start + timedelta(minutes=30))
    assert total == 1 and page[0].id == "s-b"
    page, total = await store.list_sessions(limit=1, offset=1)
    assert total == 2 and [s.id for s in page] == ["s-a"]

    assert await store.delete_session("s-a", key_id=b.id) is None
    deleted = await store.delete_session("s-a", key_id=a.id)
    assert deleted is not None and deleted.recording_path == "/rec/s-a.wav"
    assert await store.get_session("s-a") is None


async def test_abandoned_sessions_usage_and_purge(pg_url: str, tmp_path: Path) -> None:
    clock = Clock()
    store = await Store.open(pg_url, tmp_path, now=clock)
    await store.start_session("live", None, "v3", {}, None)
    clock.advance(seconds=2)
    await store.add_turn("live", turn(0, "one two"))
    await store.add_turn("live", turn(1, "three four", start=1000))
    await store.engine.dispose()

    clock.advance(days=10)
    store = await Store.open(pg_url, tmp_path, now=clock)
    try:
        assert await store.close_abandoned_sessions() == ["live"]
        detail = await store.get_session("live")
        assert detail is not None and detail.info.end_reason == ABNORMAL
        assert len(detail.turns) == 2
        assert detail.info.ended == detail.info.started + timedelta(seconds=2)

        key, _ = await store.create_key("meter")
        await store.add_usage(key.id, 10.0)
        await store.add_usage(key.id, 2.5)
        await store.add_usage(None, 1.0)
        assert await store.audio_seconds_today(key.id) == 12.5
        assert await store.usage(key_id=key.id) == [UsageRow(key.id, date(2026, 3, 24), 12.5)]
        assert UsageRow(None, date(2026, 3, 24), 1.0) in await store.usage()

        purged = await store.purge_older_than(clock() - timedelta(days=7))
        assert [s.id for s in purged] == ["live"]
        assert await store.get_session("live") is None
    finally:
        await store.close()


async def test_upload_and_call_jobs(store: Store, clock: Clock) -> None:
    """Migration 0003's tables on PostgreSQL: upload jobs kept and resumed, call jobs ended."""
    await store.add_upload_job("up-1", None, "a.wav", {"keyterms": ["x"]}, "/x/up-1.wav")
    await store.start_session("up-1", None, "upload", {}, None)
    await store.start_session("live", None, "v3", {}, None)
    keep = {j.id for j in await store.unfinished_upload_jobs()}
    assert await store.close_abandoned_sessions(keep=keep) == ["live"]
    await store.update_upload_job("up-1", status="done", done_seconds=3.0, finished=True)
    job = await store.get_upload_job("up-1")
    assert job is not None and job.status == "done" and job.params == {"keyterms": ["x"]}
    assert job.finished is not None and await store.unfinished_upload_jobs() == []
    await store.put_call_job(None, "c1", "active", None, {"callConnectionId": "c1"})
    await store.put_call_job(None, "c1", "active", "s1", {"callConnectionId": "c1"})
    assert await store.end_unfinished_call_jobs({"subCode": 8530}) == 1
    call = await store.get_call_job(None, "c1")
    assert call is not None and (call.status, call.session_id) == ("ended", "s1")
    assert call.result == {"subCode": 8530}
