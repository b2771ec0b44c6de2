"""`streamscribe keys create|list|revoke` against a real SQLite store in a temporary data dir.

The secret is printed once, alone on stdout, and never again: not by `keys list`, not in the
database. Revoked keys stop authenticating at once.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from streamscribe.cli import app
from streamscribe.store import Store

runner = CliRunner()
ENV = {"COLUMNS": "220", "NO_COLOR": "1", "TERM": "dumb"}
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
SECRET = re.compile(r"\bsk_[A-Za-z0-9_-]{20,}")


def invoke(*args: str, env: dict[str, str] | None = None) -> Any:
    result = runner.invoke(app, list(args), env={**ENV, **(env or {})})
    result.plain = ANSI.sub("", result.output)  # type: ignore[attr-defined]
    return result


def create(data_dir: Path, name: str, *options: str) -> str:
    result = invoke("keys", "create", name, "--data-dir", str(data_dir), *options)
    assert result.exit_code == 0, result.output
    secrets = SECRET.findall(result.stdout)
    assert len(secrets) == 1, result.stdout  # printed exactly once
    assert result.stdout.strip() == secrets[0]  # stdout holds the secret alone (for scripts)
    return secrets[0]


def store_call(data_dir: Path, method: str, *args: Any) -> Any:
    async def main() -> Any:
        store = await Store.open(None, data_dir)
        try:
            return await getattr(store, method)(*args)
        finally:
            await store.close()

    return asyncio.run(main())


def test_create_prints_the_secret_once_with_a_warning(tmp_path: Path) -> None:
    result = invoke("keys", "create", "alice", "--data-dir", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert len(SECRET.findall(result.output)) == 1
    assert "not stored" in result.plain and "shown once" in result.plain
    secret = SECRET.search(result.stdout).group(0)
    key = store_call(tmp_path, "authenticate", secret)
    assert key is not None and key.name == "alice"
    assert key.max_streams is None and key.record_audio
    # the database holds only a digest of it
    assert secret.encode() not in (tmp_path / "streamscribe.db").read_bytes()


def test_create_with_limits(tmp_path: Path) -> None:
    secret = create(
        tmp_path,
        "bob",
        "--max-streams",
        "2",
        "--max-audio-hours-per-day",
        "1.5",
        "--max-session-seconds",
        "600",
        "--no-record",
    )
    key = store_call(tmp_path, "authenticate", secret)
    assert (key.max_streams, key.max_audio_hours_per_day, key.max_session_seconds) == (2, 1.5, 600)
    assert key.record_audio is False


@pytest.mark.parametrize(
    ("option", "value"),
    [("--max-streams", "0"), ("--max-session-seconds", "30"), ("--max-audio-hours-per-day", "0")],
)
def test_create_rejects_impossible_limits(tmp_path: Path, option: str, value: str) -> None:
    result = invoke("keys", "create", "x", "--data-dir", str(tmp_path), option, value)
    assert result.exit_code == 2
    assert option in result.plain
    assert not SECRET.search(result.output)


def test_duplicate_name_is_refused_with_the_fix(tmp_path: Path) -> None:
    create(tmp_path, "alice")
    result = invoke("keys", "create", "alice", "--data-dir", str(tmp_path))
    assert result.exit_code == 2
    assert "already exists" in result.plain and "keys revoke" in result.plain
    assert not SECRET.search(result.output)


def test_list_shows_keys_and_limits_but_never_secrets(tmp_path: Path) -> None:
    alice = create(tmp_path, "alice", "--max-streams", "1")
    bob = create(tmp_path, "bob", "--max-session-seconds", "900", "--no-record")
    result = invoke("keys", "list", "--data-dir", str(tmp_path))
    assert result.exit_code == 0, result.output
    text = result.plain
    for secret in (alice, bob):
        assert secret not in text
        assert secret[10:20] not in text  # nothing past the display prefix
    assert not SECRET.search(text)
    rows = {line.split("│")[1].strip(): line for line in text.splitlines() if "│" in line}
    assert set(rows) >= {"alice", "bob"}, text
    assert alice[:10] in rows["alice"] and bob[:10] in rows["bob"]
    assert "900 s" in rows["bob"] and rows["bob"].rstrip("│ ").endswith("no")
    for header in ("name", "prefix", "created", "revoked", "max streams"):
        assert header in text


def test_list_when_empty_says_how_to_create(tmp_path: Path) -> None:
    result = invoke("keys", "list", "--data-dir", str(tmp_path))
    assert result.exit_code == 0
    assert "keys create" in result.plain


def test_revoke_by_name_and_by_id(tmp_path: Path) -> None:
    alice = create(tmp_path, "alice")
    bob = create(tmp_path, "bob")
    result = invoke("keys", "revoke", "alice", "--data-dir", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert store_call(tmp_path, "authenticate", alice) is None
    bob_id = store_call(tmp_path, "authenticate", bob).id
    result = invoke("keys", "revoke", bob_id, "--data-dir", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert store_call(tmp_path, "authenticate", bob) is None

    listing = invoke("keys", "list", "--data-dir", str(tmp_path)).plain
    rows = [line for line in listing.splitlines() if "alice" in line or "bob" in line]
    assert len(rows) == 2
    assert all(row.split("│")[5].strip() not in ("", "no") for row in rows), listing
    active = invoke("keys", "list", "--active", "--data-dir", str(tmp_path)).plain
    assert "alice" not in active and "bob" not in active

    # the name is free again once revoked
    create(tmp_path, "alice")


def test_revoke_unknown_fails_with_the_fix(tmp_path: Path) -> None:
    create(tmp_path, "alice")
    result = invoke("keys", "revoke", "nobody", "--data-dir", str(tmp_path))
    assert result.exit_code == 1
    assert "nobody" in result.plain and "keys list" in result.plain
    invoke("keys", "revoke", "alice", "--data-dir", str(tmp_path))
    again = invoke("keys", "revoke", "alice", "--data-dir", str(tmp_path))
    assert again.exit_code == 1


def test_data_dir_and_database_url_come_from_the_environment(tmp_path: Path) -> None:
    env = {"STREAMSCRIBE_DATA_DIR": str(tmp_path / "env-dir")}
    result = invoke("keys", "create", "carol", env=env)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "env-dir" / "streamscribe.db").exists()

    url = f"sqlite+aiosqlite:///{tmp_path / 'other.db'}"
    result = invoke("keys", "create", "dave", "--database-url", url, "--data-dir", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert (tmp_path / "other.db").exists()
    listing = invoke("keys", "list", "--database-url", url, "--data-dir", str(tmp_path)).plain
    assert "dave" in listing and "carol" not in listing


def test_keys_help_lists_the_commands() -> None:
    result = invoke("keys", "--help")
    assert result.exit_code == 0
    for command in ("create", "list", "revoke"):
        assert command in result.plain
    create_help = invoke("keys", "create", "--help").plain
    for option in (
        "--max-streams",
        "--max-audio-hours-per-day",
        "--max-session-seconds",
        "--no-record",
        "--data-dir",
        "--database-url",
    ):
        assert option in create_help


def test_serve_has_the_platform_flags(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import sys
    import types

    calls: list[Any] = []
    module = types.ModuleType("streamscribe.server.app")
    module.run = calls.append  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "streamscribe.server.app", module)
    result = invoke(
        "serve",
        "--data-dir",
        str(tmp_path),
        "--insecure-no-auth",
        "--admin-key",
        "adm",
        "--database-url",
        "sqlite+aiosqlite:///x.db",
        "--retention-days",
        "7",
    )
    assert result.exit_code == 0, result.output
    (settings,) = calls
    assert settings.insecure_no_auth is True
    assert settings.admin_key == "adm"
    assert settings.database_url == "sqlite+aiosqlite:///x.db"
    assert settings.retention_days == 7
    # without the flag, the environment decides
    calls.clear()
    monkeypatch.setenv("STREAMSCRIBE_INSECURE_NO_AUTH", "true")
    assert invoke("serve", "--data-dir", str(tmp_path)).exit_code == 0
    assert calls[0].insecure_no_auth is True
    calls.clear()
    monkeypatch.delenv("STREAMSCRIBE_INSECURE_NO_AUTH")
    assert invoke("serve", "--data-dir", str(tmp_path)).exit_code == 0
    assert calls[0].insecure_no_auth is False
