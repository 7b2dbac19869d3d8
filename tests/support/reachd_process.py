"""reachd as a child process for the Python suites (compatibility and fuzzing): environment
without stray REACHD_* variables, start on a free port, wait for the address it prints, stop.

May depend on: the standard library only (each suite has its own virtualenv).
"""
from __future__ import annotations

import contextlib
import os
import queue
import subprocess
import threading
import time
from pathlib import Path


def test_database(workdir: Path) -> str:
    """The database a suite's server uses, picked by REACHD_TEST_DATABASE (shared with the Rust
    and Node suites): unset or `sqlite` is a fresh SQLite file in `workdir`; a postgres:// URL
    names a PostgreSQL server in which a fresh database is created (with `psql`). Any other
    value stops the suite, naming it."""
    chosen = os.environ.get("REACHD_TEST_DATABASE", "")
    if chosen in ("", "sqlite"):
        return str(workdir / "reachd.db")
    if chosen.lower().startswith(("postgres://", "postgresql://")):
        return fresh_postgres_database(chosen)
    raise SystemExit(f"REACHD_TEST_DATABASE={chosen.split('://')[0]}: give `sqlite` or a "
                     "postgres:// URL")


def fresh_postgres_database(url: str) -> str:
    """Creates an empty database on the server `url` names; its URL."""
    import subprocess
    import urllib.parse
    import uuid

    name = f"reachd_t_{uuid.uuid4().hex}"
    subprocess.run(["psql", url, "-v", "ON_ERROR_STOP=1", "-qc", f"CREATE DATABASE {name}"],
                   check=True)
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(parts._replace(path="/" + name))


def reachd_env(workdir: Path, account_sid: str, auth_token: str, log: str) -> dict[str, str]:
    """This process's environment for reachd: its database in `workdir`, fixed credentials, and
    no failed-auth limit (the suites send bad credentials on purpose; the limit has tests of its
    own). Other REACHD_* variables (e.g. REACHD_BIN) are dropped: reachd refuses unknown ones."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("REACHD_")}
    env.update(
        REACHD_DATABASE=test_database(workdir),
        REACHD_ACCOUNT_SID=account_sid,
        REACHD_AUTH_TOKEN=auth_token,
        REACHD_LOG=log,
        REACHD_LIMITS__FAILED_AUTH_BURST="1000000",
        REACHD_LIMITS__FAILED_AUTH_PER_MINUTE="1000000",
    )
    return env


@contextlib.contextmanager
def run_reachd(binary: Path, workdir: Path, env: dict[str, str], startup_timeout: float = 30):
    """Starts `binary` on a free port in `workdir` and yields `(base_url, process)`; stops it
    (SIGTERM, then SIGKILL after 10 s) on exit. Its stderr goes to `workdir/stderr.log`."""
    env = dict(env, REACHD_LISTEN="127.0.0.1:0")
    stderr = open(workdir / "stderr.log", "wb")
    proc = subprocess.Popen([str(binary)], env=env, cwd=workdir, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=stderr, text=True)
    lines: queue.Queue = queue.Queue()

    def pump():  # keep draining stdout so the server never blocks on a full pipe
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    try:
        base = None
        deadline = time.monotonic() + startup_timeout
        while base is None:
            remaining = deadline - time.monotonic()
            try:
                line = lines.get(timeout=max(remaining, 0.01)) if remaining > 0 else None
            except queue.Empty:
                line = None
            if line is None:
                stderr.flush()
                log = (workdir / "stderr.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"reachd did not report its port (exit={proc.poll()}):\n{log}")
            if line.startswith("reachd listening on "):
                base = "http://" + line.split("reachd listening on ", 1)[1].strip()
        yield base, proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        stderr.close()
