"""A real PostgreSQL for tests, with no setup asked of whoever runs them.

`postgres_server()` yields a SQLAlchemy URL (postgresql+asyncpg://…):
- STREAMSCRIBE_TEST_POSTGRES_URL when set (a database the tests may write to);
- otherwise a throwaway cluster built with the installed binaries (Debian keeps them in
  /usr/lib/postgresql/<version>/bin; `apt-get install postgresql`): `initdb` into a temporary
  directory, `pg_ctl start` on a free loopback port with fsync off, removed afterwards. As root
  it runs as the `postgres` user (PostgreSQL refuses to run as root).
Only when no binaries are found does it skip, and it says why; a cluster that fails to start is
an error with the server's log.

`fresh_database(url)` makes a database of its own for one test (where the role may create one).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

ENV_URL = "STREAMSCRIBE_TEST_POSTGRES_URL"


def _version(bindir: Path) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in bindir.parent.name.split("."))
    except ValueError:
        return (0,)


def find_bindir() -> Path | None:
    """The newest directory holding both initdb and pg_ctl, or None."""
    candidates = sorted(
        (Path(p).parent for p in glob.glob("/usr/lib/postgresql/*/bin/initdb")),
        key=_version,
        reverse=True,
    )
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(Path(initdb).resolve().parent)
    for bindir in candidates:
        if (bindir / "initdb").is_file() and (bindir / "pg_ctl").is_file():
            return bindir
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _runner() -> tuple[list[str], pwd.struct_passwd | None]:
    """Command prefix that drops root, and the user it runs as (None: we are not root)."""
    if os.geteuid() != 0:
        return [], None
    for name in ("postgres", "nobody"):
        try:
            user = pwd.getpwnam(name)
        except KeyError:
            continue
        if shutil.which("runuser"):
            return ["runuser", "-u", name, "--"], user
        return ["su", "-s", "/bin/sh", name, "-c", '"$0" "$@"'], user
    raise RuntimeError("running as root with neither a postgres nor a nobody user to run as")


@contextlib.contextmanager
def throwaway_cluster(bindir: Path) -> Iterator[str]:
    prefix, user = _runner()
    base = Path(tempfile.mkdtemp(prefix="streamscribe-pg-"))
    data, log = base / "data", base / "server.log"
    if user is not None:
        os.chown(base, user.pw_uid, user.pw_gid)

    def run(*args: str, timeout: float = 120) -> None:
        done = subprocess.run(
            [*prefix, *args], capture_output=True, text=True, timeout=timeout, cwd=base
        )
        if done.returncode != 0:
            server_log = log.read_text(errors="replace")[-3000:] if log.exists() else ""
            raise RuntimeError(
                f"{' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}\n"
                f"{server_log}"
            )

    port = _free_port()
    started = False
    try:
        run(
            str(bindir / "initdb"),
            "-D", str(data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-locale",
            "--no-sync",
        )  # fmt: skip
        options = f"-F -p {port} -k {base} -c listen_addresses=127.0.0.1"
        run(
            str(bindir / "pg_ctl"),
            "-D", str(data), "-l", str(log), "-o", options, "-w", "-t", "60", "start",
        )  # fmt: skip
        started = True
        yield f"postgresql+asyncpg://postgres@127.0.0.1:{port}/postgres"
    finally:
        if started:
            with contextlib.suppress(Exception):
                run(str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(base, ignore_errors=True)


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    url = os.environ.get(ENV_URL)
    if url:
        yield url
        return
    bindir = find_bindir()
    if bindir is None:
        pytest.skip(
            f"PostgreSQL binaries not found (no /usr/lib/postgresql/*/bin/initdb): "
            f"apt-get install postgresql, or set {ENV_URL}"
        )
    with throwaway_cluster(bindir) as url:
        yield url


def _asyncpg_dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@contextlib.asynccontextmanager
async def fresh_database(url: str) -> AsyncIterator[str]:
    """A new empty database on the server of `url`, dropped afterwards; `url` itself when the
    role may not create databases."""
    import asyncpg

    name = f"streamscribe_test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(_asyncpg_dsn(url))
    try:
        try:
            await admin.execute(f'CREATE DATABASE "{name}"')
        except asyncpg.InsufficientPrivilegeError:
            yield url
            return
        try:
            yield make_url(url).set(database=name).render_as_string(hide_password=False)
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()
