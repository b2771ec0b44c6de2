"""The store side of durable jobs (issue 18, item 5): upload and call job records, and crash
recovery that does not bill an upload's session before its transcript is complete."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from streamscribe.server.app import _recover
from streamscribe.store import Store


async def test_recovery_skips_unfinished_uploads_and_bills_live_sessions(tmp_path: Path) -> None:
    store = await Store.open(None, tmp_path)
    try:
        await store.add_upload_job("up-1", None, "a.wav", {"language": None}, "/x/up-1.wav")
        await store.start_session("up-1", None, "upload", {"audio_seconds": 600.0}, None)
        await store.end_session("up-1", "x", 600.0)  # ended: recovery ignores it anyway
        await store.add_upload_job("up-2", None, "b.wav", {}, "/x/up-2.wav")
        await store.start_session("up-2", None, "upload", {}, None)  # left open by a crash
        await store.start_session("live", None, "v3", {}, None)
        await _recover(store)
        assert (await store.get_session("live")).info.end_reason == "abnormal"
        assert (await store.get_session("up-2")).info.ended is None  # kept for the job to resume
        assert await store.usage() == []  # nothing transcribed, nothing billed

        await store.update_upload_job("up-2", status="transcribing", audio_seconds=12.5)
        jobs = await store.unfinished_upload_jobs()
        assert [j.id for j in jobs] == ["up-1", "up-2"]
        assert jobs[1].status == "transcribing" and jobs[1].upload_path == "/x/up-2.wav"
        await store.update_upload_job("up-2", status="done", finished=True, upload_path=None)
        done = await store.get_upload_job("up-2")
        assert done is not None and done.finished is not None and done.upload_path is None
        assert await store.get_upload_job("up-2", key_id="someone-else") is None
    finally:
        await store.close()


async def test_call_jobs_left_open_are_ended_with_a_reason(tmp_path: Path) -> None:
    store = await Store.open(None, tmp_path)
    try:
        request = {"callConnectionId": "c1", "correlationId": "r"}
        await store.put_call_job(None, "c1", "active", None, request)
        await store.put_call_job(None, "c1", "active", "sess-1", request)  # upsert
        await store.put_call_job(None, "c2", "ended", "sess-2", {"callConnectionId": "c2"})
        assert await store.end_unfinished_call_jobs({"code": 503, "message": "restart"}) == 1
        c1 = await store.get_call_job(None, "c1")
        assert c1 is not None and c1.status == "ended" and c1.session_id == "sess-1"
        assert c1.result == {"code": 503, "message": "restart"} and c1.ended is not None
        c2 = await store.get_call_job(None, "c2")
        assert c2 is not None and c2.result is None
        assert await store.get_call_job("other-key", "c1") is None
        await store.purge_older_than(datetime.now(UTC) + timedelta(days=1))
        assert await store.get_call_job(None, "c1") is None
    finally:
        await store.close()
