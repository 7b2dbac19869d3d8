"""Fixtures: start the real reachd binary, point twilio-python at it, validate every response.

Every HTTP exchange made through `RecordingHttpClient` (all twilio-python calls) or the
`raw` helper (plain `requests` calls to the Twilio dialects) is recorded; after each test
body the recorded exchanges are validated against Twilio's OAI files (see oai.py) and the
test fails if any response does not validate.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

import oai

REPO_ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO_ROOT / "tests" / "support"))
from reachd_process import reachd_env, run_reachd  # noqa: E402
ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
AUTH_TOKEN = "compat_test_token_" + "5f" * 8
STARTUP_TIMEOUT = 30.0


# --------------------------------------------------------------------------- recording


@dataclass
class Exchange:
    method: str
    url: str
    status: int
    text: str
    base: str
    checked: bool = False


@dataclass
class Recorder:
    exchanges: list[Exchange] = field(default_factory=list)

    def add(self, method, url, status, text, base):
        self.exchanges.append(Exchange(method.upper(), url, status, text, base))

    def unchecked_errors(self) -> list[str]:
        errors = []
        for ex in self.exchanges:
            if not ex.checked:
                ex.checked = True
                errors += oai.validate_exchange(ex.method, ex.url, ex.status, ex.text, ex.base)
        return errors

    def requests_to(self, method: str, path_fragment: str) -> list[Exchange]:
        return [e for e in self.exchanges if e.method == method and path_fragment in e.url]


RECORDER = Recorder()


class RecordingHttpClient(TwilioHttpClient):
    """twilio-python's own HTTP client, recording every request/response pair."""

    def __init__(self, base: str, **kwargs):
        super().__init__(**kwargs)
        self._base = base

    def request(self, method, url, params=None, data=None, headers=None, auth=None,
                timeout=None, allow_redirects=False):
        response = super().request(method, url, params=params, data=data, headers=headers,
                                   auth=auth, timeout=timeout, allow_redirects=allow_redirects)
        full_url = requests.Request(method, url, params=params).prepare().url
        RECORDER.add(method, full_url, response.status_code, response.text, self._base)
        return response


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    """Fail the test when any response seen so far (setup included) violates the schema."""
    try:
        return (yield)
    finally:
        errors = RECORDER.unchecked_errors()
        if errors:
            raise AssertionError(
                f"{len(errors)} response(s) do not validate against Twilio's OAI:\n  "
                + "\n  ".join(errors)
            )


# --------------------------------------------------------------------------- server


@dataclass
class Server:
    base: str
    proc: subprocess.Popen
    workdir: Path
    database: str  # the server's REACHD_DATABASE (a file, or a PostgreSQL URL)

    @property
    def chat(self):
        return f"{self.base}/chat"

    @property
    def conversations(self):
        return f"{self.base}/conversations"

    def client(self, auth_token: str = AUTH_TOKEN) -> Client:
        client = Client(ACCOUNT_SID, auth_token,
                        http_client=RecordingHttpClient(self.base, timeout=30))
        # one base URL per product (docs/twilio-compatibility.md §2)
        client.chat.base_url = self.chat
        client.conversations.base_url = self.conversations
        return client

    def raw(self, method: str, path: str, auth=(ACCOUNT_SID, AUTH_TOKEN), **kwargs):
        """Plain `requests` call; recorded (and so validated) when it hits a Twilio dialect."""
        url = self.base + path
        resp = requests.request(method, url, auth=auth, timeout=30, **kwargs)
        RECORDER.add(method, resp.url, resp.status_code, resp.text, self.base)
        return resp

    def register_binding(self, service_sid: str, user: str, binding_type: str,
                         address: str | None = None, endpoint: str | None = None,
                         credential_sid: str | None = None) -> dict:
        """reachd's native server-side push registration
        (`POST /api/v1/services/{sid}/users/{user}/bindings`); Twilio has none."""
        body = {"binding_type": binding_type, "address": address or secrets.token_hex(16)}
        if endpoint is not None:
            body["endpoint"] = endpoint
        if credential_sid is not None:
            body["credential_sid"] = credential_sid
        resp = requests.post(f"{self.base}/api/v1/services/{service_sid}/users/{user}/bindings",
                             json=body, auth=(ACCOUNT_SID, AUTH_TOKEN), timeout=30)
        assert resp.status_code == 201, resp.text
        return resp.json()


def _binary() -> Path:
    path = Path(os.environ.get("REACHD_BIN", "target/debug/reachd"))
    if not path.is_absolute():
        path = REPO_ROOT / path
    deadline = time.monotonic() + 120  # the binary may be momentarily missing during a rebuild
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(1)
    if not path.exists():
        pytest.exit(f"reachd binary not found at {path} (set REACHD_BIN)", returncode=2)
    return path


@contextlib.contextmanager
def start_server(extra_env: dict[str, str] | None = None):
    """Start reachd on a free port; `extra_env` adds REACHD_* settings (e.g. webhook retries)."""
    with tempfile.TemporaryDirectory(prefix="reachd-compat-") as tmp:
        workdir = Path(tmp)
        env = reachd_env(workdir, ACCOUNT_SID, AUTH_TOKEN, log="warn")
        env.update(extra_env or {})
        with run_reachd(_binary(), workdir, env, STARTUP_TIMEOUT) as (base, proc):
            yield Server(base, proc, workdir, env["REACHD_DATABASE"])


@pytest.fixture(scope="session")
def server():
    with start_server() as srv:
        yield srv
    errors = RECORDER.unchecked_errors()  # e.g. from the last fixture teardowns
    assert not errors, "responses do not validate:\n  " + "\n  ".join(errors)


@pytest.fixture
def fresh_server():
    """A server of its own, for tests that need untouched account-level state."""
    with start_server() as srv:
        yield srv


@pytest.fixture
def server_factory():
    """`server_factory(REACHD_X="…")` starts a server of its own with extra settings."""
    with contextlib.ExitStack() as stack:
        yield lambda **env: stack.enter_context(start_server(env))


@pytest.fixture(scope="session")
def client(server) -> Client:
    return server.client()


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def chat_service(client):
    """A fresh Chat v2 service, deleted afterwards."""
    service = client.chat.v2.services.create(friendly_name=unique("svc"))
    yield service
    with contextlib.suppress(Exception):
        client.chat.v2.services(service.sid).delete()
