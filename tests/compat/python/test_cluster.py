"""Cluster mode through twilio-python: three `reachd serve` nodes on one PostgreSQL database,
and a twilio-python client whose every request goes to the next node (round robin), get the
same answers — status and body — as a client of a single node for one script of Chat v1/v2
and Conversations calls (services, users, paging, credentials, presence, deletes, errors).
Answers are compared after replacing SIDs (numbered by first appearance), dates, base URLs
and page tokens. Every response is also validated against Twilio's OAI (conftest.py).

Runs when REACHD_TEST_DATABASE is a postgres:// URL (cluster mode needs PostgreSQL); skipped
otherwise.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import requests
from twilio.base.exceptions import TwilioRestException
from twilio.jwt.access_token import AccessToken
from twilio.jwt.access_token.grants import ChatGrant
from twilio.rest import Client

from conftest import ACCOUNT_SID, AUTH_TOKEN, REPO_ROOT, STARTUP_TIMEOUT, RecordingHttpClient, _binary

sys.path.insert(0, str(REPO_ROOT / "tests" / "support"))
from reachd_process import fresh_postgres_database, run_reachd  # noqa: E402

ON_POSTGRES = os.environ.get("REACHD_TEST_DATABASE", "").lower().startswith(
    ("postgres://", "postgresql://"))
pytestmark = pytest.mark.skipif(not ON_POSTGRES,
                                reason="cluster mode needs REACHD_TEST_DATABASE=postgres://…")
BASIC = (ACCOUNT_SID, AUTH_TOKEN)
# Reads repeated after a write: with three nodes, one through each.
ROUNDS = 3


def node_env(database: str, node_id: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REACHD_")}
    env.update(
        REACHD_DATABASE=database,
        REACHD_ACCOUNT_SID=ACCOUNT_SID,
        REACHD_AUTH_TOKEN=AUTH_TOKEN,
        REACHD_LOG="warn",
        REACHD_LIMITS__FAILED_AUTH_BURST="1000000",
        REACHD_LIMITS__FAILED_AUTH_PER_MINUTE="1000000",
        REACHD_CLUSTER__NODE_ID=node_id,
        REACHD_CLUSTER__LEASE_MS="2000",
    )
    return env


@contextlib.contextmanager
def nodes(count: int):
    """`count` nodes on one fresh database: `(bases, database)`."""
    database = fresh_postgres_database(os.environ["REACHD_TEST_DATABASE"])
    with tempfile.TemporaryDirectory(prefix="reachd-cluster-") as tmp, \
            contextlib.ExitStack() as stack:
        bases = []
        for i in range(count):
            workdir = Path(tmp) / f"node{i}"
            workdir.mkdir()
            base, _ = stack.enter_context(
                run_reachd(_binary(), workdir, node_env(database, f"py{i}"), STARTUP_TIMEOUT))
            bases.append(base)
        yield bases, database


class RoundRobin(RecordingHttpClient):
    """twilio-python's HTTP client sending each request to the next node, keeping every answer
    as `(method, url, status, text)`."""

    def __init__(self, bases: list[str], **kwargs):
        super().__init__(bases[0], **kwargs)
        self.bases = bases
        self.turn = 0
        self.answers: list[tuple[str, str, int, str]] = []

    def request(self, method, url, params=None, data=None, headers=None, auth=None,
                timeout=None, allow_redirects=False):
        base = self.bases[self.turn % len(self.bases)]
        self.turn += 1
        # twilio-python builds URLs on the first node's base, and follows paging URLs as the
        # answering node wrote them.
        origin = next(b for b in self.bases if url.startswith(b))
        url = base + url[len(origin):]
        self._base = base
        response = super().request(method, url, params=params, data=data, headers=headers,
                                   auth=auth, timeout=timeout, allow_redirects=allow_redirects)
        full = requests.Request(method, url, params=params).prepare().url
        self.answers.append((method.upper(), full, response.status_code, response.text))
        return response


SID = re.compile(r"\b([A-Z]{2})[0-9a-f]{32}\b")
DATE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z")
PAGE_TOKEN = re.compile(r"PageToken=[^&\"]+")


def normalized(answers, bases) -> list[tuple[str, str, int, object]]:
    """Answers with SIDs numbered by first appearance, dates, bases and page tokens
    replaced."""
    names: dict[str, str] = {}

    def sid(match):
        return names.setdefault(match.group(0), f"<{match.group(1)}{len(names)}>")

    def clean(text: str) -> str:
        for base in bases:
            text = text.replace(base, "<base>")
        text = PAGE_TOKEN.sub("PageToken=<token>", text)
        text = DATE.sub("<date>", text)
        return SID.sub(sid, text)

    out = []
    for method, url, status, text in answers:
        try:
            body = json.loads(clean(text)) if text else None
        except ValueError:
            body = clean(text)
        out.append((method, clean(url), status, body))
    return out


def create_key(database: str) -> dict:
    env = node_env(database, "cli")
    proc = subprocess.run([str(_binary()), "keys", "create"], env=env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def mint(key: dict, service_sid: str, identity: str) -> str:
    token = AccessToken(ACCOUNT_SID, key["sid"], key["secret"], identity=identity)
    token.add_grant(ChatGrant(service_sid=service_sid))
    return token.to_jwt()


def script(bases: list[str], database: str) -> list:
    """One fixed sequence of twilio-python calls through a round-robin client over `bases`;
    every answer, normalized."""
    http = RoundRobin(bases, timeout=30)
    client = Client(ACCOUNT_SID, AUTH_TOKEN, http_client=http)
    client.chat.base_url = bases[0] + "/chat"
    client.conversations.base_url = bases[0] + "/conversations"

    svc = client.chat.v2.services.create(friendly_name="cluster compat")
    client.chat.v1.services(svc.sid).update(reachability_enabled=True)
    client.chat.v2.services(svc.sid).fetch()
    for identity in ("alice", "bob", "carol", "dave", "erin"):
        client.chat.v2.services(svc.sid).users.create(identity=identity,
                                                      friendly_name=identity.title())
    client.chat.v2.services(svc.sid).users("alice").fetch()
    client.chat.v2.services(svc.sid).users("bob").update(friendly_name="Robert",
                                                         attributes='{"team": 1}')
    for _ in range(ROUNDS):
        client.chat.v2.services(svc.sid).users("bob").fetch()
    list(client.chat.v2.services(svc.sid).users.list(page_size=2))
    list(client.chat.v1.services(svc.sid).users.list(page_size=3))
    client.conversations.v1.services(svc.sid).configuration().fetch()
    client.conversations.v1.services(svc.sid).users("carol").fetch()
    credential = client.chat.v2.credentials.create(type="fcm", friendly_name="push",
                                                   secret="not-a-real-secret")
    client.chat.v2.credentials(credential.sid).fetch()

    # Presence: a session opened on the last node shows on every node, and so does its end.
    requests.post(f"{bases[0]}/api/v1/services/{svc.sid}/settings", auth=BASIC, timeout=30,
                  json={"offline_grace_ms": 0}).raise_for_status()
    key = create_key(database)
    bearer = {"Authorization": f"Bearer {mint(key, svc.sid, 'alice')}"}
    opened = requests.post(f"{bases[-1]}/client/v1/sessions", headers=bearer, json={},
                           timeout=30)
    assert opened.status_code == 201, opened.text
    for _ in range(ROUNDS):
        assert client.chat.v2.services(svc.sid).users("alice").fetch().is_online is True
    session = opened.json()["session_id"]
    closed = requests.delete(f"{bases[-1]}/client/v1/sessions/{session}", headers=bearer,
                             timeout=30)
    assert closed.status_code == 204
    deadline = time.monotonic() + 10
    while requests.get(f"{bases[0]}/chat/v2/Services/{svc.sid}/Users/alice", auth=BASIC,
                       timeout=30).json()["is_online"] is not False:
        assert time.monotonic() < deadline, "alice never went offline"
        time.sleep(0.05)
    for _ in range(ROUNDS):
        assert client.chat.v2.services(svc.sid).users("alice").fetch().is_online is False

    # A write through one node is what every other node answers next.
    client.chat.v2.services(svc.sid).update(friendly_name="renamed")
    for _ in range(ROUNDS):
        assert client.chat.v2.services(svc.sid).fetch().friendly_name == "renamed"
    client.chat.v2.services(svc.sid).users("carol").delete()
    for _ in range(ROUNDS):
        with pytest.raises(TwilioRestException) as missing:
            client.chat.v2.services(svc.sid).users("carol").fetch()
        assert missing.value.status == 404
    with pytest.raises(TwilioRestException) as duplicate:
        client.chat.v2.services(svc.sid).users.create(identity="alice")
    assert duplicate.value.status == 409
    list(client.chat.v2.services.list())
    return normalized(http.answers, bases)


def test_round_robin_over_three_nodes_answers_like_a_single_node():
    with nodes(1) as (single, single_db):
        expected = script(single, single_db)
    with nodes(3) as (bases, database):
        got = script(bases, database)
    assert len(got) == len(expected)
    for i, (g, e) in enumerate(zip(got, expected)):
        assert g == e, f"answer {i} differs:\n cluster: {g}\n single:  {e}"
