"""The durable store against a real SQLite file: schema, keys, tokens, sessions, crashes, usage."""

from __future__ import annotations

import asyncio
import hashlib
import signal
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from streamscribe.events import EndReason, TurnUpdate, Word
from streamscribe.store import (
    ABNORMAL,
    KeyInfo,
    Store,
    TokenGrant,
    TurnRecord,
    UsageRow,
    repository,
)
from streamscribe.store.db import DB_FILENAME, database_url
from streamscribe.store.tables import metadata


class Clock:
    """A settable `now` for the store."""

    def __init__(self) -> None:
        self.t = datetime(2026, 3, 14, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.t

    def advance(self, **delta: float) -> None:
        self.t += timedelta(**delta)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def store(tmp_path: Path, clock: Clock) -> AsyncIterator[Store]:
    s = await Store.open(None, tmp_path, now=clock)
    yield s
    await s.close()


def raw(tmp_path: Path, sql: str, *args: object) -> list[tuple]:
    with sqlite3.connect(tmp_path / DB_FILENAME) as conn:
        return conn.execute(sql, args).fetchall()


def schema_diff(connection: sa.Connection) -> list:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return compare_metadata(context, metadata)


def turn(order: int, text: str, channel: int = 0, start: int = 0) -> TurnRecord:
    words = [
        {"text": w, "start": start + i * 300, "end": start + i * 300 + 250, "confidence": 0.9}
        for i, w in enumerate(text.split())
    ]
    return TurnRecord(
        channel=channel,
        turn_order=order,
        text=text,
        words=words,
        speaker=None,
        language="en",
        language_confidence=0.98,
        start_ms=words[0]["start"],
        end_ms=words[-1]["end"],
    )


# ---------------------------------------------------------------- schema


async def test_migrations_create_schema_and_reopen_is_idempotent(
    tmp_path: Path, clock: Clock
) -> None:
    store = await Store.open(None, tmp_path / "nested" / "dir", now=clock)
    assert await store.ping()
    key, _ = await store.create_key("first")
    await store.close()

    db = tmp_path / "nested" / "dir"
    names = {r[0] for r in raw(db, "SELECT name FROM sqlite_master")}
    assert {"api_keys", "tokens", "sessions", "turns", "usage", "alembic_version"} <= names
    assert {"ix_sessions_key_id", "ix_sessions_started", "ix_api_keys_name_active"} <= names
    turn_indexes = [
        [c[2] for c in raw(db, f"PRAGMA index_info('{r[1]}')")]
        for r in raw(db, "PRAGMA index_list('turns')")
        if r[2]  # unique
    ]
    assert ["session_id", "channel", "turn_order"] in turn_indexes  # also indexes session_id
    assert raw(db, "SELECT version_num FROM alembic_version") == [("0003",)]
    assert raw(db, "PRAGMA journal_mode") == [("wal",)]

    again = await Store.open(None, db, now=clock)
    try:
        assert [k.id for k in await again.list_keys()] == [key.id]
        async with again.engine.connect() as conn:  # migrations and tables.py agree
            assert await conn.run_sync(schema_diff) == []
    finally:
        await again.close()
    assert raw(db, "SELECT version_num FROM alembic_version") == [("0003",)]


def test_database_url_defaults_to_sqlite_file_and_picks_async_drivers(tmp_path: Path) -> None:
    default = database_url(None, tmp_path)
    assert default.drivername == "sqlite+aiosqlite"
    assert default.database == str(tmp_path.resolve() / DB_FILENAME)
    assert database_url("postgres://u:p@h/db", tmp_path).drivername == "postgresql+asyncpg"
    assert database_url("postgresql://u@h/db", tmp_path).drivername == "postgresql+asyncpg"
    assert database_url("sqlite:///x.db", tmp_path).drivername == "sqlite+aiosqlite"
    named = "postgresql+psycopg://u@h/db"
    assert database_url(named, tmp_path).drivername == "postgresql+psycopg"


# ---------------------------------------------------------------- API keys


async def test_key_secret_is_shown_once_and_only_its_hash_is_stored(
    store: Store, tmp_path: Path, clock: Clock
) -> None:
    key, secret = await store.create_key("ci", max_streams=2, max_audio_hours_per_day=1.5)
    assert secret.startswith("sk_") and len(secret) > 40
    assert key.prefix == secret[:10] and key.name == "ci" and not key.revoked
    assert key.created == clock() and key.created.tzinfo is not None
    assert (key.max_streams, key.max_audio_hours_per_day, key.record_audio) == (2, 1.5, True)

    rows = raw(tmp_path, "SELECT * FROM api_keys")
    assert len(rows) == 1
    assert not any(secret in str(v) for v in rows[0])
    digest = hashlib.sha256(secret.encode()).hexdigest()
    assert raw(tmp_path, "SELECT secret_hash FROM api_keys") == [(digest,)]
    # not anywhere in the database files either (main file and write-ahead log)
    for f in tmp_path.glob(DB_FILENAME + "*"):
        assert secret.encode() not in f.read_bytes()
    assert secret not in repr(await store.list_keys())


async def test_authenticate_revoke_and_names(store: Store) -> None:
    key, secret = await store.create_key("alice", record_audio=False)
    other, other_secret = await store.create_key("bob")
    assert await store.count_active_keys() == 2

    found = await store.authenticate(secret)
    assert isinstance(found, KeyInfo) and found.id == key.id and found.record_audio is False
    assert await store.authenticate(secret + "x") is None
    assert await store.authenticate("") is None

    with pytest.raises(ValueError, match="already exists"):
        await store.create_key("alice")

    assert await store.revoke_key("alice") is True
    assert await store.revoke_key("alice") is False
    assert await store.authenticate(secret) is None
    assert await store.count_active_keys() == 1
    assert [k.name for k in await store.list_keys()] == ["bob"]
    listed = {k.id: k for k in await store.list_keys(include_revoked=True)}
    assert listed[key.id].revoked and listed[key.id].revoked_at is not None

    renewed, _ = await store.create_key("alice")  # the name is free again once revoked
    assert renewed.id != key.id
    assert await store.revoke_key(other.id) is True
    assert await store.authenticate(other_secret) is None
    assert await store.revoke_key("nobody") is False


async def test_authenticate_compares_digests_in_constant_time(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, secret = await store.create_key("k")
    calls: list[tuple[str, str]] = []
    real = repository.hmac.compare_digest

    def spy(a: str, b: str) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(repository.hmac, "compare_digest", spy)
    assert await store.authenticate(secret) is not None
    assert await store.authenticate("sk_unknown") is None
    assert len(calls) == 2  # the same comparison on the found and the not-found path
    assert all(len(a) == len(b) == 64 for a, b in calls)


# ---------------------------------------------------------------- temporary tokens


async def test_tokens_are_single_use_bound_to_their_key_and_expire(
    store: Store, clock: Clock, tmp_path: Path
) -> None:
    key, _ = await store.create_key("app")
    token = await store.create_token(key.id, expires_in_seconds=60, max_session_seconds=300)
    assert token not in str(raw(tmp_path, "SELECT * FROM tokens"))

    assert await store.redeem_token(token) == TokenGrant(key_id=key.id, max_session_seconds=300)
    assert await store.redeem_token(token) is None  # used
    assert await store.redeem_token("tk_unknown") is None

    late = await store.create_token(key.id, expires_in_seconds=60, max_session_seconds=300)
    clock.advance(seconds=61)
    assert await store.redeem_token(late) is None  # expired

    orphaned = await store.create_token(key.id, expires_in_seconds=60, max_session_seconds=30)
    await store.revoke_key(key.id)
    assert await store.redeem_token(orphaned) is None  # its key was revoked
    with pytest.raises(ValueError):
        await store.create_token(key.id, expires_in_seconds=60, max_session_seconds=30)


async def test_racing_redeems_grant_a_token_once(store: Store) -> None:
    key, _ = await store.create_key("app")
    token = await store.create_token(key.id, expires_in_seconds=60, max_session_seconds=30)
    grants = await asyncio.gather(*(store.redeem_token(token) for _ in range(5)))
    assert sum(g is not None for g in grants) == 1


# ---------------------------------------------------------------- sessions and turns


async def test_session_and_turns_round_trip(store: Store, clock: Clock) -> None:
    key, _ = await store.create_key("k")
    update = TurnUpdate(
        channel=1,
        turn_order=0,
        words=(
            Word("Hello", 120, 480, 0.91234, True, speaker="A"),
            Word("world.", 500, 900, 0.8, True, speaker="A"),
        ),
        end_of_turn=True,
        formatted=True,
        language="en",
        language_confidence=0.97,
        speaker="A",
    )
    record = TurnRecord.from_update(update)
    assert record.words[0] == {
        "text": "Hello",
        "start": 120,
        "end": 480,
        "confidence": 0.9123,
        "speaker": "A",
    }
    assert (record.text, record.start_ms, record.end_ms) == ("Hello world.", 120, 900)

    params = {"sample_rate": 16000, "encoding": "pcm_s16le", "keyterms": ["ünïcode"]}
    await store.start_session("s-1", key.id, "assemblyai_v3", params, "/rec/s-1.wav")
    clock.advance(seconds=5)
    await store.add_turn("s-1", turn(0, "first turn here"))
    await store.add_turn("s-1", record)
    # the formatted re-send of turn 0 on channel 0 replaces it
    await store.add_turn("s-1", turn(0, "First turn, here."))
    clock.advance(seconds=5)
    await store.end_session("s-1", EndReason.TERMINATED, 9.5)
    await store.end_session("s-1", EndReason.ERROR, 1.0)  # the first ending stands

    detail = await store.get_session("s-1")
    assert detail is not None
    info = detail.info
    assert (info.id, info.key_id, info.protocol, info.params) == (
        "s-1",
        key.id,
        "assemblyai_v3",
        params,
    )
    assert info.started == datetime(2026, 3, 14, 12, 0, tzinfo=UTC)
    assert info.ended == info.started + timedelta(seconds=10)
    assert (info.audio_seconds, info.end_reason, info.recording_path) == (
        9.5,
        "terminated",
        "/rec/s-1.wav",
    )
    assert info.turn_count == 2
    assert detail.turns == [turn(0, "First turn, here."), record]
    assert await store.get_session("nope") is None


async def test_list_sessions_filters_pages_and_counts(store: Store, clock: Clock) -> None:
    a, _ = await store.create_key("a")
    b, _ = await store.create_key("b")
    start = clock()
    texts = ["the quick brown fox", "100% sure", "snake_case words", "QUICK thinking", "nothing"]
    for i, text in enumerate(texts):
        await store.start_session(f"s{i}", a.id if i % 2 == 0 else b.id, "v3", {}, None)
        await store.add_turn(f"s{i}", turn(0, text))
        await store.end_session(f"s{i}", "terminated", 1.0)
        clock.advance(hours=1)

    page, total = await store.list_sessions()
    assert total == 5 and [s.id for s in page] == ["s4", "s3", "s2", "s1", "s0"]
    page, total = await store.list_sessions(key_id=a.id)
    assert total == 3 and [s.id for s in page] == ["s4", "s2", "s0"]
    page, total = await store.list_sessions(
        since=start + timedelta(hours=1), until=start + timedelta(hours=3)
    )
    assert total == 2 and [s.id for s in page] == ["s2", "s1"]
    page, total = await store.list_sessions(text="quick")
    assert [s.id for s in page] == ["s3", "s0"] and total == 2
    page, _ = await store.list_sessions(text="quick", key_id=b.id)
    assert [s.id for s in page] == ["s3"]
    assert [s.id for s in (await store.list_sessions(text="%"))[0]] == ["s1"]
    assert [s.id for s in (await store.list_sessions(text="e_c"))[0]] == ["s2"]
    page, total = await store.list_sessions(limit=2, offset=2)
    assert total == 5 and [s.id for s in page] == ["s2", "s1"]
    assert all(s.turn_count == 1 for s in page)


async def test_sessions_are_isolated_by_key(store: Store, tmp_path: Path) -> None:
    mine, _ = await store.create_key("mine")
    theirs, _ = await store.create_key("theirs")
    await store.start_session("s", mine.id, "v3", {}, "/rec/s.wav")
    await store.add_turn("s", turn(0, "private words"))

    assert await store.get_session("s", key_id=theirs.id) is None
    assert await store.delete_session("s", key_id=theirs.id) is None
    assert (await store.get_session("s", key_id=mine.id)) is not None

    deleted = await store.delete_session("s", key_id=mine.id)
    assert deleted is not None and deleted.recording_path == "/rec/s.wav"
    assert deleted.turn_count == 1
    assert await store.get_session("s") is None
    assert raw(tmp_path, "SELECT count(*) FROM turns") == [(0,)]


async def test_abandoned_session_is_closed_abnormally_after_restart(
    tmp_path: Path, clock: Clock
) -> None:
    store = await Store.open(None, tmp_path, now=clock)
    await store.start_session("live", None, "v3", {}, "/rec/live.wav")
    await store.start_session("done", None, "v3", {}, None)
    await store.end_session("done", "terminated", 3.0)
    clock.advance(seconds=3)
    await store.add_turn("live", turn(0, "one two", start=0))
    clock.advance(seconds=4)
    await store.add_turn("live", turn(1, "three four", start=4000))
    await store.engine.dispose()  # the process goes away without ending the session

    clock.advance(hours=2)
    store = await Store.open(None, tmp_path, now=clock)
    try:
        assert await store.close_abandoned_sessions() == ["live"]
        assert await store.close_abandoned_sessions() == []
        detail = await store.get_session("live")
        assert detail is not None
        assert detail.info.end_reason == ABNORMAL
        assert detail.info.ended == detail.info.started + timedelta(seconds=7)  # its last turn
        assert detail.info.audio_seconds == pytest.approx(4.55)
        assert detail.info.recording_path == "/rec/live.wav"
        assert [t.text for t in detail.turns] == ["one two", "three four"]
        done = await store.get_session("done")
        assert done is not None and done.info.end_reason == "terminated"
    finally:
        await store.close()


CRASHING_SERVER = textwrap.dedent(
    """
    import asyncio, os, signal, sys
    from pathlib import Path
    from streamscribe.store import Store, TurnRecord

    async def main():
        store = await Store.open(None, Path(sys.argv[1]))
        await store.start_session("crash", None, "v3", {"sample_rate": 16000}, None)
        for i, text in enumerate(["before the crash", "still before it"]):
            words = [{"text": w, "start": i * 1000 + j * 200, "end": i * 1000 + j * 200 + 150,
                      "confidence": 0.9} for j, w in enumerate(text.split())]
            await store.add_turn("crash", TurnRecord(0, i, text, words, None, "en", 0.9,
                                                     words[0]["start"], words[-1]["end"]))
        os.kill(os.getpid(), signal.SIGKILL)

    asyncio.run(main())
    """
)


def test_turns_survive_sigkill(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", CRASHING_SERVER, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr

    async def restart() -> None:
        store = await Store.open(None, tmp_path)
        try:
            assert await store.close_abandoned_sessions() == ["crash"]
            detail = await store.get_session("crash")
            assert detail is not None and detail.info.end_reason == ABNORMAL
            assert [t.text for t in detail.turns] == ["before the crash", "still before it"]
            assert detail.turns[1].words[0] == {
                "text": "still",
                "start": 1000,
                "end": 1150,
                "confidence": 0.9,
            }
        finally:
            await store.close()

    asyncio.run(restart())


# ---------------------------------------------------------------- usage and retention


async def test_usage_is_metered_per_key_per_utc_day(store: Store, clock: Clock) -> None:
    key, _ = await store.create_key("k")
    await store.add_usage(key.id, 30.0)
    await store.add_usage(key.id, 12.5)
    await store.add_usage(key.id, 0.0)
    await store.add_usage(None, 5.0)
    await store.add_usage(key.id, 7.0, day=date(2026, 3, 1))
    assert await store.audio_seconds_today(key.id) == 42.5

    clock.advance(hours=12)  # past midnight UTC
    assert await store.audio_seconds_today(key.id) == 0.0
    await store.add_usage(key.id, 1.0)

    today, yesterday = date(2026, 3, 15), date(2026, 3, 14)
    assert await store.usage(key_id=key.id) == [
        UsageRow(key.id, date(2026, 3, 1), 7.0),
        UsageRow(key.id, yesterday, 42.5),
        UsageRow(key.id, today, 1.0),
    ]
    everyone = await store.usage(since=yesterday)
    assert UsageRow(None, yesterday, 5.0) in everyone and len(everyone) == 3


async def test_purge_deletes_old_ended_sessions_with_their_turns(
    store: Store, clock: Clock, tmp_path: Path
) -> None:
    await store.start_session("old", None, "v3", {}, "/rec/old.wav")
    await store.add_turn("old", turn(0, "old words"))
    await store.end_session("old", "terminated", 1.0)
    await store.start_session("old-live", None, "v3", {}, None)
    clock.advance(days=10)
    await store.start_session("new", None, "v3", {}, None)
    await store.add_turn("new", turn(0, "new words"))
    await store.end_session("new", "terminated", 1.0)

    purged = await store.purge_older_than(clock() - timedelta(days=7))
    assert [s.id for s in purged] == ["old"] and purged[0].recording_path == "/rec/old.wav"
    assert await store.get_session("old") is None
    assert await store.get_session("old-live") is not None  # still running: kept
    assert [r[0] for r in raw(tmp_path, "SELECT text FROM turns")] == ["new words"]
    assert await store.purge_older_than(clock() - timedelta(days=7)) == []


async def test_a_turns_translation_is_kept_and_read_back(store: Store) -> None:
    update = TurnUpdate(
        channel=0,
        turn_order=0,
        words=(Word("Guten", 0, 300, 0.9, True), Word("Tag.", 300, 600, 0.9, True)),
        end_of_turn=True,
        language="de",
        translation="Good day.",
    )
    await store.start_session("t-1", None, "assemblyai_v3", {}, None)
    await store.add_turn("t-1", TurnRecord.from_update(update))
    await store.add_turn("t-1", turn(1, "no translation here"))
    detail = await store.get_session("t-1")
    assert detail is not None
    assert [t.translation for t in detail.turns] == ["Good day.", None]


async def test_a_database_from_before_translations_upgrades_with_its_turns(tmp_path: Path) -> None:
    from alembic import command
    from sqlalchemy import create_engine as create_sync_engine

    from streamscribe.store.db import alembic_config

    engine = create_sync_engine(f"sqlite:///{tmp_path / DB_FILENAME}")
    with engine.begin() as conn:
        command.upgrade(alembic_config(connection=conn), "0001")
        conn.exec_driver_sql(
            "INSERT INTO sessions (id, protocol, params, started, audio_seconds) "
            "VALUES ('old', 'assemblyai_v3', '{}', '2026-01-01 00:00:00', 0)"
        )
        conn.exec_driver_sql(
            "INSERT INTO turns (session_id, channel, turn_order, text, words, start_ms, end_ms, "
            "created) VALUES ('old', 0, 0, 'kept', '[]', 0, 500, '2026-01-01 00:00:00')"
        )
    engine.dispose()
    store = await Store.open(None, tmp_path)
    try:
        detail = await store.get_session("old")
        assert detail is not None and [t.text for t in detail.turns] == ["kept"]
        assert detail.turns[0].translation is None
    finally:
        await store.close()
