"""What a key whose daily audio allowance is spent is told, in every dialect (issue 18, item 6):
the limit, the key, when it resets, and the fix, the most important first (close reasons keep
only 123 bytes)."""

from __future__ import annotations

from datetime import UTC, datetime

from streamscribe.server.admission import quota_message, seconds_to_reset

NOW = datetime(2026, 3, 1, 21, 15, 30, tzinfo=UTC)


def test_the_message_names_the_limit_the_key_the_reset_and_the_fix():
    text = quota_message("team-a", 2.5, now=NOW)
    assert text.startswith("Daily audio limit reached: key 'team-a' allows 2.5 h of audio a day")
    assert "resets at 00:00 UTC (in 2 h 45 min)" in text  # 2 h 44.5 min, rounded
    assert "streamscribe keys create NAME --max-audio-hours-per-day H" in text
    head = text.encode()[:123].decode()
    assert "team-a" in head and "00:00 UTC" in head


def test_an_upload_says_what_the_file_needs():
    text = quota_message("k", 1, " and this file needs 12.0 min, 3.5 min are left", now=NOW)
    assert "allows 1 h of audio a day and this file needs 12.0 min, 3.5 min are left;" in text


def test_the_reset_is_the_next_utc_midnight():
    assert seconds_to_reset(NOW) == 2 * 3600 + 44 * 60 + 30
    assert seconds_to_reset(datetime(2026, 3, 1, tzinfo=UTC)) == 86400
    assert "(in 1 min)" in quota_message("k", 1, now=datetime(2026, 3, 1, 23, 59, 59, tzinfo=UTC))
