"""`Store`: every read and write the server and CLI make, as async methods over one engine.

Rules it keeps:
- Each write is its own short transaction, committed before the call returns. A turn is written
  when it becomes final, so a process killed mid-session loses at most the turn in progress;
  `close_abandoned_sessions` (run at start) then marks such sessions ended "abnormal".
- Secrets are never stored: API keys and temporary tokens are kept as SHA-256 hex digests, and
  a key's secret is returned once, by `create_key`. Lookups compare digests in constant time.
- A token is redeemed by one conditional UPDATE, so two racing redeems cannot both succeed.
- Times come from `self.now` (UTC, timezone-aware), which tests replace to move the clock.

Schema in `tables.py`, connection and migrations in `db.py`, returned values in `records.py`.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from collections.abc import Callable, Collection, Iterable, Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from streamscribe.store import db
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
from streamscribe.store.tables import (
    ANONYMOUS,
    api_keys,
    call_jobs,
    sessions,
    tokens,
    turns,
    upload_jobs,
    usage,
)

KEY_PREFIX = "sk_"
TOKEN_PREFIX = "tk_"
DISPLAY_PREFIX_CHARS = 10  # "sk_" and 7 characters of the random part
_DUMMY_DIGEST = "0" * 64
_CHUNK = 500  # ids per IN (...) list


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def _like_pattern(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _chunks(ids: Sequence[str]) -> Iterable[Sequence[str]]:
    for i in range(0, len(ids), _CHUNK):
        yield ids[i : i + _CHUNK]


_turn_count = (
    sa.select(sa.func.count(turns.c.id))
    .where(turns.c.session_id == sessions.c.id)
    .correlate(sessions)
    .scalar_subquery()
    .label("turn_count")
)
_session_columns = (*sessions.c, _turn_count)


def _key_info(row: Any) -> KeyInfo:
    return KeyInfo(
        id=row.id,
        name=row.name,
        prefix=row.prefix,
        created=row.created,
        revoked=row.revoked_at is not None,
        max_streams=row.max_streams,
        max_audio_hours_per_day=row.max_audio_hours_per_day,
        max_session_seconds=row.max_session_seconds,
        record_audio=bool(row.record_audio),
        revoked_at=row.revoked_at,
    )


def _session_info(row: Any) -> SessionInfo:
    return SessionInfo(
        id=row.id,
        key_id=row.key_id,
        protocol=row.protocol,
        params=dict(row.params or {}),
        started=row.started,
        ended=row.ended,
        audio_seconds=float(row.audio_seconds),
        end_reason=row.end_reason,
        recording_path=row.recording_path,
        turn_count=int(row.turn_count or 0),
    )


def _turn_record(row: Any) -> TurnRecord:
    return TurnRecord(
        channel=row.channel,
        turn_order=row.turn_order,
        text=row.text,
        words=list(row.words or []),
        speaker=row.speaker,
        language=row.language,
        language_confidence=row.language_confidence,
        start_ms=row.start_ms,
        end_ms=row.end_ms,
        translation=row.translation,
    )


class Store:
    """The durable store. Build it with `await Store.open(url, data_dir)`; `close()` at exit."""

    def __init__(self, engine: AsyncEngine, now: Callable[[], datetime] = _utcnow) -> None:
        self.engine = engine
        self.now = now

    @classmethod
    async def open(
        cls,
        url: str | None,
        data_dir: Path,
        *,
        now: Callable[[], datetime] = _utcnow,
    ) -> Store:
        """Connect (SQLite in `data_dir` unless `url` names a database) and migrate to head."""
        data_dir = Path(data_dir)
        data_dir.mkdir(parents=True, exist_ok=True)
        engine = db.create_engine(db.database_url(url, data_dir))
        try:
            await db.migrate(engine)
        except BaseException:
            await engine.dispose()
            raise
        return cls(engine, now)

    async def close(self) -> None:
        await self.engine.dispose()

    async def ping(self) -> bool:
        try:
            async with self.engine.connect() as conn:
                await conn.execute(sa.text("SELECT 1"))
            return True
        except Exception:
            return False

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def _insert(self, table: sa.Table) -> Any:
        """An INSERT that supports ON CONFLICT on this store's dialect."""
        return (postgresql.insert if self.dialect == "postgresql" else sqlite.insert)(table)

    # ------------------------------------------------------------------ API keys

    async def create_key(
        self,
        name: str,
        max_streams: int | None = None,
        max_audio_hours_per_day: float | None = None,
        max_session_seconds: int | None = None,
        record_audio: bool = True,
    ) -> tuple[KeyInfo, str]:
        """A new key and its secret. The secret is not stored and cannot be shown again.

        Raises ValueError when a key in use already has this name.
        """
        name = name.strip()
        if not name:
            raise ValueError("a key needs a name")
        secret = KEY_PREFIX + secrets.token_urlsafe(32)
        values = {
            "id": str(uuid.uuid4()),
            "name": name,
            "prefix": secret[:DISPLAY_PREFIX_CHARS],
            "secret_hash": _digest(secret),
            "created": self.now(),
            "revoked_at": None,
            "max_streams": max_streams,
            "max_audio_hours_per_day": max_audio_hours_per_day,
            "max_session_seconds": max_session_seconds,
            "record_audio": record_audio,
        }
        try:
            async with self.engine.begin() as conn:
                await conn.execute(api_keys.insert().values(**values))
        except sa.exc.IntegrityError as exc:
            raise ValueError(f"a key named {name!r} already exists; revoke it first") from exc
        return _key_info(SimpleNamespace(**values)), secret

    async def list_keys(self, include_revoked: bool = False) -> list[KeyInfo]:
        query = sa.select(api_keys).order_by(api_keys.c.created, api_keys.c.name)
        if not include_revoked:
            query = query.where(api_keys.c.revoked_at.is_(None))
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [_key_info(r) for r in rows]

    async def revoke_key(self, id_or_name: str) -> bool:
        """Revoke the key with this id, or the key in use with this name. False: none found."""
        async with self.engine.begin() as conn:
            result = await conn.execute(
                api_keys.update()
                .where(
                    sa.or_(api_keys.c.id == id_or_name, api_keys.c.name == id_or_name),
                    api_keys.c.revoked_at.is_(None),
                )
                .values(revoked_at=self.now())
            )
        return result.rowcount > 0

    async def authenticate(self, secret: str) -> KeyInfo | None:
        """The key this secret belongs to, or None when unknown or revoked."""
        digest = _digest(secret)
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(sa.select(api_keys).where(api_keys.c.secret_hash == digest))
            ).first()
        # compare whether or not a row was found, so both paths do the same work
        matched = hmac.compare_digest(row.secret_hash if row else _DUMMY_DIGEST, digest)
        if row is None or not matched or row.revoked_at is not None:
            return None
        return _key_info(row)

    async def count_active_keys(self) -> int:
        query = sa.select(sa.func.count()).select_from(api_keys)
        async with self.engine.connect() as conn:
            return int(await conn.scalar(query.where(api_keys.c.revoked_at.is_(None))) or 0)

    # ------------------------------------------------------------------ temporary tokens

    async def create_token(
        self, key_id: str, expires_in_seconds: int, max_session_seconds: int
    ) -> str:
        """A single-use token acting for `key_id`. Raises ValueError for an unknown/revoked key."""
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        now = self.now()
        async with self.engine.begin() as conn:
            active = await conn.scalar(
                sa.select(api_keys.c.id).where(
                    api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None)
                )
            )
            if active is None:
                raise ValueError(f"no key in use with id {key_id!r}")
            # tokens long past their expiry are of no use to anyone: keep the table small
            await conn.execute(tokens.delete().where(tokens.c.expires < now - timedelta(days=1)))
            await conn.execute(
                tokens.insert().values(
                    token_hash=_digest(token),
                    key_id=key_id,
                    created=now,
                    expires=now + timedelta(seconds=expires_in_seconds),
                    used=None,
                    max_session_seconds=max_session_seconds,
                )
            )
        return token

    async def redeem_token(self, token: str) -> TokenGrant | None:
        """Use up a token. None when unknown, used, expired, or its key was revoked."""
        now = self.now()
        live_keys = sa.select(api_keys.c.id).where(api_keys.c.revoked_at.is_(None))
        async with self.engine.begin() as conn:
            row = (
                await conn.execute(
                    tokens.update()
                    .where(
                        tokens.c.token_hash == _digest(token),
                        tokens.c.used.is_(None),
                        tokens.c.expires > now,
                        tokens.c.key_id.in_(live_keys),
                    )
                    .values(used=now)
                    .returning(tokens.c.key_id, tokens.c.max_session_seconds)
                )
            ).first()
        if row is None:
            return None
        return TokenGrant(key_id=row.key_id, max_session_seconds=row.max_session_seconds)

    # ------------------------------------------------------------------ sessions and turns

    async def start_session(
        self,
        session_id: str,
        key_id: str | None,
        protocol: str,
        params: dict[str, Any],
        recording_path: str | None,
    ) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
                sessions.insert().values(
                    id=session_id,
                    key_id=key_id,
                    protocol=protocol,
                    params=params,
                    started=self.now(),
                    ended=None,
                    audio_seconds=0.0,
                    end_reason=None,
                    recording_path=recording_path,
                )
            )

    async def add_turn(self, session_id: str, turn: TurnRecord) -> None:
        """Write a final turn, committed before returning. The same (channel, turn_order) again
        (a formatted re-send of the turn) replaces the stored one."""
        values = {
            "session_id": session_id,
            "channel": turn.channel,
            "turn_order": turn.turn_order,
            "text": turn.text,
            "words": list(turn.words),
            "speaker": turn.speaker,
            "language": turn.language,
            "language_confidence": turn.language_confidence,
            "translation": turn.translation,
            "start_ms": turn.start_ms,
            "end_ms": turn.end_ms,
            "created": self.now(),
        }
        insert = self._insert(turns).values(**values)
        replace = {k: insert.excluded[k] for k in values if k not in ("session_id", "channel")}
        upsert = insert.on_conflict_do_update(
            index_elements=["session_id", "channel", "turn_order"], set_=replace
        )
        async with self.engine.begin() as conn:
            await conn.execute(upsert)

    async def end_session(self, session_id: str, reason: str, audio_seconds: float) -> None:
        """Record how the session ended; a session already ended keeps its first ending."""
        async with self.engine.begin() as conn:
            await conn.execute(
                sessions.update()
                .where(sessions.c.id == session_id, sessions.c.ended.is_(None))
                .values(ended=self.now(), end_reason=str(reason), audio_seconds=audio_seconds)
            )

    async def close_abandoned_sessions(self, keep: Collection[str] = ()) -> list[str]:
        """End every session left open by a server that died: reason "abnormal", ended at its
        last written turn (or its start), audio seconds at least up to that turn's end.
        Sessions in `keep` (those of upload jobs that will be resumed) are left open.

        Call it once at start, before serving. (Sessions live in another server process sharing
        the database would be closed too: one store per database is assumed.)
        """
        last_turn = (
            sa.select(
                turns.c.session_id,
                sa.func.max(turns.c.created).label("last_created"),
                sa.func.max(turns.c.end_ms).label("last_end_ms"),
            )
            .group_by(turns.c.session_id)
            .subquery()
        )
        query = (
            sa.select(
                sessions.c.id,
                sessions.c.started,
                sessions.c.audio_seconds,
                last_turn.c.last_created,
                last_turn.c.last_end_ms,
            )
            .select_from(sessions.outerjoin(last_turn, last_turn.c.session_id == sessions.c.id))
            .where(sessions.c.ended.is_(None))
            .order_by(sessions.c.started)
        )
        closed: list[str] = []
        async with self.engine.begin() as conn:
            for row in (await conn.execute(query)).all():
                if row.id in keep:
                    continue
                audio = max(float(row.audio_seconds), (row.last_end_ms or 0) / 1000)
                await conn.execute(
                    sessions.update()
                    .where(sessions.c.id == row.id, sessions.c.ended.is_(None))
                    .values(
                        ended=row.last_created or row.started,
                        end_reason=ABNORMAL,
                        audio_seconds=audio,
                    )
                )
                closed.append(row.id)
        return closed

    def _session_filters(
        self,
        key_id: str | None,
        since: datetime | None,
        until: datetime | None,
        text: str | None,
    ) -> list[sa.ColumnElement[bool]]:
        where: list[sa.ColumnElement[bool]] = []
        if key_id is not None:
            where.append(sessions.c.key_id == key_id)
        if since is not None:
            where.append(sessions.c.started >= since)
        if until is not None:
            where.append(sessions.c.started < until)
        if text:
            where.append(
                sa.exists().where(
                    turns.c.session_id == sessions.c.id,
                    turns.c.text.ilike(_like_pattern(text), escape="\\"),
                )
            )
        return where

    async def list_sessions(
        self,
        key_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        text: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> tuple[list[SessionInfo], int]:
        """A page of sessions, newest first, and how many match in all.

        `since` is inclusive and `until` exclusive, both on the start time; `text` matches any
        turn's text, case-insensitively, as a plain substring.
        """
        where = self._session_filters(key_id, since, until, text)
        page = (
            sa.select(*_session_columns)
            .where(*where)
            .order_by(sessions.c.started.desc(), sessions.c.id.desc())
            .limit(max(0, limit))
            .offset(max(0, offset))
        )
        count = sa.select(sa.func.count()).select_from(sessions).where(*where)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(page)).all()
            total = int(await conn.scalar(count) or 0)
        return [_session_info(r) for r in rows], total

    @staticmethod
    def _one_session(session_id: str, key_id: str | None) -> sa.Select[Any]:
        query = sa.select(*_session_columns).where(sessions.c.id == session_id)
        if key_id is not None:
            query = query.where(sessions.c.key_id == key_id)
        return query

    async def get_session(self, session_id: str, key_id: str | None = None) -> SessionDetail | None:
        """A session and its turns in time order; with `key_id`, only if it is that key's."""
        async with self.engine.connect() as conn:
            row = (await conn.execute(self._one_session(session_id, key_id))).first()
            if row is None:
                return None
            turn_rows = (
                await conn.execute(
                    sa.select(turns)
                    .where(turns.c.session_id == session_id)
                    .order_by(turns.c.start_ms, turns.c.channel, turns.c.turn_order)
                )
            ).all()
        return SessionDetail(info=_session_info(row), turns=[_turn_record(t) for t in turn_rows])

    async def delete_session(
        self, session_id: str, key_id: str | None = None
    ) -> SessionInfo | None:
        """Delete a session and its turns; returns what was deleted (its recording is the
        caller's to remove). With `key_id`, only if it is that key's session."""
        async with self.engine.begin() as conn:
            row = (await conn.execute(self._one_session(session_id, key_id))).first()
            if row is None:
                return None
            await self._delete_sessions(conn, [session_id])
        return _session_info(row)

    async def purge_older_than(self, cutoff: datetime) -> list[SessionInfo]:
        """Delete ended sessions (and their turns) that started before `cutoff`, tokens that
        expired before it and upload and call jobs that ended before it; returns the sessions
        deleted (recordings are the caller's). A session still live is kept until it ends."""
        query = sa.select(*_session_columns).where(
            sessions.c.started < cutoff, sessions.c.ended.is_not(None)
        )
        async with self.engine.begin() as conn:
            rows = (await conn.execute(query)).all()
            await self._delete_sessions(conn, [r.id for r in rows])
            await conn.execute(tokens.delete().where(tokens.c.expires < cutoff))
            await conn.execute(upload_jobs.delete().where(upload_jobs.c.finished < cutoff))
            await conn.execute(call_jobs.delete().where(call_jobs.c.ended < cutoff))
        return [_session_info(r) for r in rows]

    @staticmethod
    async def _delete_sessions(conn: AsyncConnection, ids: Sequence[str]) -> None:
        for chunk in _chunks(ids):
            await conn.execute(turns.delete().where(turns.c.session_id.in_(chunk)))
            await conn.execute(sessions.delete().where(sessions.c.id.in_(chunk)))

    # ------------------------------------------------------------------ usage

    async def add_usage(
        self, key_id: str | None, audio_seconds: float, day: date | None = None
    ) -> None:
        """Add audio seconds to a key's total for a UTC day (today unless given)."""
        if audio_seconds <= 0:
            return
        insert = self._insert(usage).values(
            key_id=key_id or ANONYMOUS,
            day=day or self.now().astimezone(UTC).date(),
            audio_seconds=float(audio_seconds),
        )
        upsert = insert.on_conflict_do_update(
            index_elements=["key_id", "day"],
            set_={"audio_seconds": usage.c.audio_seconds + insert.excluded.audio_seconds},
        )
        async with self.engine.begin() as conn:
            await conn.execute(upsert)

    async def usage(self, key_id: str | None = None, since: date | None = None) -> list[UsageRow]:
        """Metered audio per key per day (all keys when `key_id` is None), oldest day first."""
        query = sa.select(usage).order_by(usage.c.day, usage.c.key_id)
        if key_id is not None:
            query = query.where(usage.c.key_id == key_id)
        if since is not None:
            query = query.where(usage.c.day >= since)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [
            UsageRow(
                key_id=r.key_id if r.key_id != ANONYMOUS else None,
                day=r.day,
                audio_seconds=float(r.audio_seconds),
            )
            for r in rows
        ]

    async def audio_seconds_today(self, key_id: str) -> float:
        today = self.now().astimezone(UTC).date()
        query = sa.select(usage.c.audio_seconds).where(
            usage.c.key_id == key_id, usage.c.day == today
        )
        async with self.engine.connect() as conn:
            return float(await conn.scalar(query) or 0.0)

    async def get_key(self, key_id: str) -> KeyInfo | None:
        """The key with this id, revoked or not."""
        async with self.engine.connect() as conn:
            row = (await conn.execute(sa.select(api_keys).where(api_keys.c.id == key_id))).first()
        return _key_info(row) if row is not None else None

    # ------------------------------------------------------------------ upload jobs

    async def add_upload_job(
        self,
        job_id: str,
        key_id: str | None,
        filename: str,
        params: dict[str, Any],
        upload_path: str,
    ) -> None:
        """Keep an accepted upload (status "queued") before it is answered 202."""
        async with self.engine.begin() as conn:
            await conn.execute(
                upload_jobs.insert().values(
                    id=job_id,
                    key_id=key_id,
                    filename=filename,
                    params=params,
                    status="queued",
                    audio_seconds=0.0,
                    done_seconds=0.0,
                    error=None,
                    upload_path=upload_path,
                    created=self.now(),
                    finished=None,
                )
            )

    async def update_upload_job(
        self, job_id: str, *, finished: bool = False, **values: Any
    ) -> None:
        """Set a job's status, seconds, error or upload path; `finished=True` ends it (now)."""
        unknown = set(values) - {"status", "audio_seconds", "done_seconds", "error", "upload_path"}
        if unknown:
            raise ValueError(f"not an upload job field: {sorted(unknown)}")
        if finished:
            values["finished"] = self.now()
        async with self.engine.begin() as conn:
            await conn.execute(
                upload_jobs.update().where(upload_jobs.c.id == job_id).values(**values)
            )

    async def get_upload_job(self, job_id: str, key_id: str | None = None) -> UploadJobInfo | None:
        """An upload job; with `key_id`, only if it is that key's."""
        query = sa.select(upload_jobs).where(upload_jobs.c.id == job_id)
        if key_id is not None:
            query = query.where(upload_jobs.c.key_id == key_id)
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        return _upload_job(row) if row is not None else None

    async def unfinished_upload_jobs(self) -> list[UploadJobInfo]:
        """Jobs a stopped or crashed server left queued or in progress, oldest first."""
        query = (
            sa.select(upload_jobs)
            .where(upload_jobs.c.finished.is_(None))
            .order_by(upload_jobs.c.created)
        )
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [_upload_job(r) for r in rows]

    # ------------------------------------------------------------------ call jobs

    async def put_call_job(
        self,
        key_id: str | None,
        call_id: str,
        status: str,
        session_id: str | None,
        request: dict[str, Any],
    ) -> None:
        """Keep a call job's state (insert, or replace the same key's job of that id)."""
        values = {
            "key_id": key_id or ANONYMOUS,
            "call_id": call_id,
            "status": status,
            "session_id": session_id,
            "request": request,
            "result": None,
            "created": self.now(),
            "ended": self.now() if status == "ended" else None,
        }
        insert = self._insert(call_jobs).values(**values)
        kept = ("status", "session_id", "request", "result", "ended")
        if status != "ended":  # a new job under an old id starts afresh
            kept += ("created",)
        upsert = insert.on_conflict_do_update(
            index_elements=["key_id", "call_id"], set_={k: insert.excluded[k] for k in kept}
        )
        async with self.engine.begin() as conn:
            await conn.execute(upsert)

    async def end_unfinished_call_jobs(self, result: dict[str, Any]) -> int:
        """Mark every call job not yet ended as ended with `result` (run once at start)."""
        async with self.engine.begin() as conn:
            done = await conn.execute(
                call_jobs.update()
                .where(call_jobs.c.status != "ended")
                .values(status="ended", result=result, ended=self.now())
            )
        return done.rowcount

    async def get_call_job(self, key_id: str | None, call_id: str) -> CallJobInfo | None:
        query = sa.select(call_jobs).where(
            call_jobs.c.key_id == (key_id or ANONYMOUS), call_jobs.c.call_id == call_id
        )
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        return _call_job(row) if row is not None else None

    async def list_call_jobs(self, key_id: str | None, limit: int = 1000) -> list[CallJobInfo]:
        """A key's call jobs, newest first."""
        query = (
            sa.select(call_jobs)
            .where(call_jobs.c.key_id == (key_id or ANONYMOUS))
            .order_by(call_jobs.c.created.desc())
            .limit(limit)
        )
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [_call_job(r) for r in rows]


def _call_job(row: Any) -> CallJobInfo:
    return CallJobInfo(
        key_id=row.key_id if row.key_id != ANONYMOUS else None,
        call_id=row.call_id,
        status=row.status,
        session_id=row.session_id,
        request=dict(row.request or {}),
        result=dict(row.result) if row.result is not None else None,
        created=row.created,
        ended=row.ended,
    )


def _upload_job(row: Any) -> UploadJobInfo:
    return UploadJobInfo(
        id=row.id,
        key_id=row.key_id,
        filename=row.filename,
        params=dict(row.params or {}),
        status=row.status,
        audio_seconds=float(row.audio_seconds),
        done_seconds=float(row.done_seconds),
        error=row.error,
        upload_path=row.upload_path,
        created=row.created,
        finished=row.finished,
    )
