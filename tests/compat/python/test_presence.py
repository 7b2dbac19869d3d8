"""End-to-end presence: client sessions opened with twilio-minted access tokens, observed
through twilio-python's Chat v2 / Conversations fetches and reachd's native reads.

Semantics under test (docs/ARCHITECTURE.md §4, docs/twilio-compatibility.md §7 and §9): a user is
online iff a session lives; offline is reported after the last session ends plus the
service's offline grace, i.e. no earlier than TTL + grace after the last ping and no later
than TTL + grace + 1 s. Every test sets small per-service timings through
`/api/v1/services/{IS}/settings` so it runs in a few seconds.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

import jwt as pyjwt
import pytest
import requests
from twilio.jwt.access_token import AccessToken
from twilio.jwt.access_token.grants import ChatGrant

from conftest import ACCOUNT_SID, AUTH_TOKEN, _binary, unique

BASIC = (ACCOUNT_SID, AUTH_TOKEN)
POLL = 0.1  # seconds between two observations
MAX_TOKEN_TTL = 24 * 3600

# small per-service timings (ms)
PING_MS, TTL_MS, GRACE_MS = 1000, 2000, 500
SWEEP_MS = 1000  # offline is detected at most TTL + grace + 1 s after the last ping
SWEEP_STEP_MS = 250  # the sweeper rounds its wake-ups up to this step
# Upper bounds on when offline is *observed* also allow for the observer's own latency on a
# loaded machine (slow fetches, late polls); lower bounds get no such allowance.
LOAD_SLACK_MS = 2000


# --------------------------------------------------------------------------- helpers


def reachd_cli(server, *args: str) -> subprocess.CompletedProcess:
    """Run `reachd <args>` against the running server's database (keys create/revoke…)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("REACHD_")}
    env.update(REACHD_DATABASE=server.database,
               REACHD_ACCOUNT_SID=ACCOUNT_SID, REACHD_AUTH_TOKEN=AUTH_TOKEN, REACHD_LOG="warn")
    proc = subprocess.run([str(_binary()), *args], env=env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, f"reachd {' '.join(args)} failed: {proc.stderr}"
    return proc


def create_key(server) -> dict:
    key = json.loads(reachd_cli(server, "keys", "create").stdout)
    assert key["sid"].startswith("SK") and len(key["sid"]) == 34, key
    assert isinstance(key["secret"], str) and key["secret"], key
    return key


@pytest.fixture(scope="module")
def api_key(server) -> dict:
    return create_key(server)


def mint(key: dict, service_sid: str, identity: str = "alice", **kwargs) -> str:
    """An access token minted exactly as a twilio-python backend does
    (docs/twilio-compatibility.md §9)."""
    token = AccessToken(ACCOUNT_SID, key["sid"], key["secret"], identity=identity, **kwargs)
    token.add_grant(ChatGrant(service_sid=service_sid))
    return token.to_jwt()


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Device:
    """A client app speaking the HTTP client API with one access token."""

    def __init__(self, server, token: str, header: str = "Authorization"):
        self.base = server.base + "/client/v1"
        self.token = token
        self.header = header

    def _headers(self):
        if self.header == "Authorization":
            return {"Authorization": f"Bearer {self.token}"}
        return {self.header: self.token}

    def call(self, method: str, path: str, **kwargs) -> requests.Response:
        return requests.request(method, self.base + path, headers=self._headers(), timeout=30,
                                **kwargs)

    def open(self, **body) -> dict:
        resp = self.call("POST", "/sessions", json=body)
        assert resp.status_code == 201, resp.text
        return resp.json()

    def ping(self, session_id: str) -> float:
        """Ping and return the monotonic time just before the request was sent."""
        sent = time.monotonic()
        resp = self.call("POST", f"/sessions/{session_id}/ping")
        assert resp.status_code == 204, resp.text
        assert resp.text == ""
        return sent

    def close(self, session_id: str):
        resp = self.call("DELETE", f"/sessions/{session_id}")
        assert resp.status_code == 204, resp.text

    def register(self, binding_type: str = "fcm", address: str | None = None, **extra) -> dict:
        body = {"binding_type": binding_type, "address": address or secrets.token_hex(16), **extra}
        resp = self.call("POST", "/bindings", json=body)
        assert resp.status_code == 201, resp.text
        return resp.json()

    def unregister(self, sid_or_endpoint: str):
        resp = self.call("DELETE", f"/bindings/{quote(sid_or_endpoint, safe='')}")
        assert resp.status_code == 204, resp.text

    def user(self, identity: str) -> requests.Response:
        return self.call("GET", f"/users/{quote(identity, safe='')}")


def set_timings(server, service_sid: str, ping=PING_MS, ttl=TTL_MS, grace=GRACE_MS) -> dict:
    body = {"ping_interval_ms": ping, "session_ttl_ms": ttl, "offline_grace_ms": grace}
    resp = requests.post(f"{server.base}/api/v1/services/{service_sid}/settings", json=body,
                         auth=BASIC, timeout=30)
    assert resp.status_code == 200, resp.text
    settings = resp.json()
    for k, v in body.items():
        assert settings[k] == v and settings["overrides"][k] == v, settings
    got = requests.get(f"{server.base}/api/v1/services/{service_sid}/settings", auth=BASIC,
                       timeout=30).json()
    assert got == settings
    return settings


def native(server, path: str, **params) -> dict:
    resp = requests.get(f"{server.base}/api/v1{path}", params=params, auth=BASIC, timeout=30)
    assert resp.status_code == 200, resp.text
    return resp.json()


def reach(server, service_sid: str, identity: str) -> dict:
    body = native(server, f"/services/{service_sid}/reachability", identity=identity)
    assert body["not_found"] == [], body
    [view] = body["users"]
    assert view["identity"] == identity
    return view


def assert_twilio_error(resp: requests.Response, status: int, code: int):
    assert resp.status_code == status, (resp.status_code, resp.text)
    body = resp.json()
    assert set(body) == {"code", "message", "more_info", "status"}, body
    assert body["code"] == code, body
    assert body["status"] == status, body
    assert body["more_info"] == f"https://www.twilio.com/docs/errors/{code}", body
    assert isinstance(body["message"], str) and body["message"], body


@pytest.fixture
def presence_service(client, server, chat_service):
    """A Chat service with reachability enabled and fast timings."""
    updated = client.chat.v2.services(chat_service.sid).update(reachability_enabled=True)
    assert updated.reachability_enabled is True
    set_timings(server, chat_service.sid)
    return chat_service


def wait_for(fetch, predicate, timeout: float, period: float = POLL):
    """Call `fetch()` every `period` s until `predicate(value)`; return
    [(t_sent, value, t_received)…] (the server read the value between the two times)."""
    seen = []
    deadline = time.monotonic() + timeout
    while True:
        sent = time.monotonic()
        value = fetch()
        seen.append((sent, value, time.monotonic()))
        if predicate(value):
            return seen
        if sent > deadline:
            raise AssertionError(f"condition not met within {timeout:.2f} s; last={value!r}")
        time.sleep(max(0.0, period - (time.monotonic() - sent)))


def chat_online(client, service_sid, identity="alice"):
    return lambda: client.chat.v2.services(service_sid).users(identity).fetch().is_online


# --------------------------------------------------------------------------- 1-3: online/offline


def test_session_online_then_ttl_expiry_offline(client, server, presence_service, api_key):
    """1. Open → online in Chat v2 and Conversations; stop pinging → offline in [TTL+grace,
    TTL+grace+1 s] after the last ping."""
    IS = presence_service.sid
    # a TTL well above the ping interval: the first ping only comes after several validated
    # fetches and a 1 s sleep, which a loaded machine stretches
    ttl = 4000
    set_timings(server, IS, ttl=ttl)
    device = Device(server, mint(api_key, IS))
    opened = device.open()
    assert opened["identity"] == "alice"
    assert opened["service_sid"] == IS
    assert opened["reachability_enabled"] is True
    assert opened["ping_interval"] == PING_MS and opened["session_ttl"] == ttl
    assert opened["resumed"] is False
    assert opened["session_id"].startswith("SE")

    user = client.chat.v2.services(IS).users("alice").fetch()  # created on first contact
    assert user.identity == "alice" and user.is_online is True
    assert user.is_notifiable is None  # never had a push registration
    conv = client.conversations.v1.services(IS).users("alice").fetch()
    assert conv.sid == user.sid and conv.is_online is True and conv.is_notifiable is None
    v1 = client.chat.v1.services(IS).users("alice").fetch()
    assert v1.sid == user.sid and v1.is_online is True and v1.is_notifiable is None
    # lists always show null (docs/twilio-compatibility.md §7)
    [listed] = client.chat.v2.services(IS).users.list()
    assert listed.sid == user.sid and listed.is_online is None and listed.is_notifiable is None

    for _ in range(2):
        time.sleep(PING_MS / 1000)
        last_ping = device.ping(opened["session_id"])
    upper_ms = ttl + GRACE_MS + SWEEP_MS + POLL * 1000 + LOAD_SLACK_MS
    seen = wait_for(chat_online(client, IS), lambda v: v is False, timeout=upper_ms / 1000 + 1)
    *before, (t_false, _, got_false) = seen
    assert before and all(v is True for _, v, _ in before), seen
    assert before[0][0] - last_ping < ttl / 2000  # first seen online well before the expiry
    delay_ms = (t_false - last_ping) * 1000
    last_true_ms = (before[-1][0] - last_ping) * 1000
    print(f"\noffline detected (ttl expiry): last True at +{last_true_ms:.0f} ms, "
          f"first False at +{delay_ms:.0f} ms after the last ping "
          f"(TTL {ttl} + grace {GRACE_MS} = {ttl + GRACE_MS} ms)")
    # never before TTL + grace: the False answer was received at least that long after the
    # last ping was sent (the server saw the ping later, and answered before receipt) ...
    early_ms = (got_false - last_ping) * 1000
    assert early_ms >= ttl + GRACE_MS - 50, f"offline after only {early_ms:.0f} ms"
    # ... and within TTL + grace + 1 s (plus one observation period and the load allowance)
    assert delay_ms <= upper_ms, f"{delay_ms:.0f} ms"

    conv = client.conversations.v1.services(IS).users("alice").fetch()
    assert conv.is_online is False and conv.is_notifiable is None
    assert client.chat.v1.services(IS).users("alice").fetch().is_online is False
    # the expired session is gone: ping → 404 (the client opens a new one)
    resp = device.call("POST", f"/sessions/{opened['session_id']}/ping")
    assert_twilio_error(resp, 404, 20404)
    assert native(server, f"/services/{IS}/users/alice/sessions")["sessions"] == []


def test_pinging_keeps_user_online_beyond_ttl(client, server, presence_service, api_key):
    """2. Pinging every ping interval for 3 x TTL keeps the user online throughout; a second
    session that is never pinged expires meanwhile without making the user offline."""
    IS = presence_service.sid
    device = Device(server, mint(api_key, IS), header="X-Twilio-Token")
    session_id = device.open()["session_id"]
    idle = device.open()["session_id"]
    seq = reach(server, IS, "alice")["sequence"]
    start = time.monotonic()
    next_ping = start + PING_MS / 1000
    observations = []
    while time.monotonic() - start < 3 * TTL_MS / 1000:
        if time.monotonic() >= next_ping:
            device.ping(session_id)
            next_ping += PING_MS / 1000
        observations.append(chat_online(client, IS)())
        time.sleep(POLL)
    assert len(observations) > 10  # ~60 on an idle machine; fewer when fetches are slow
    assert all(v is True for v in observations), observations
    sessions = native(server, f"/services/{IS}/users/alice/sessions")["sessions"]
    assert [s["id"] for s in sessions] == [session_id]  # the same session; the idle one expired
    assert_twilio_error(device.call("POST", f"/sessions/{idle}/ping"), 404, 20404)
    assert reach(server, IS, "alice")["sequence"] == seq  # pings are not transitions
    device.close(session_id)


def test_explicit_close_goes_offline_after_grace(client, server, chat_service, api_key):
    """3. DELETE the session → still online right after, offline after grace (+ ≤ 1 s)."""
    IS = chat_service.sid
    client.chat.v2.services(IS).update(reachability_enabled=True)
    grace = 1000
    set_timings(server, IS, ping=1000, ttl=5000, grace=grace)
    device = Device(server, mint(api_key, IS))
    session_id = device.open()["session_id"]
    assert chat_online(client, IS)() is True

    close_sent = time.monotonic()
    device.close(session_id)
    closed_at = time.monotonic()  # the server ended the session between these two times
    upper_ms = grace + SWEEP_STEP_MS + LOAD_SLACK_MS
    seen = wait_for(chat_online(client, IS), lambda v: v is False, timeout=upper_ms / 1000 + 1)
    *before, (t_false, _, got_false) = seen
    assert before and before[0][0] - closed_at < grace / 2000 and before[0][1] is True, seen
    assert all(v is True for _, v, _ in before), seen
    delay_ms = (t_false - closed_at) * 1000
    print(f"\noffline detected (explicit close): first False at +{delay_ms:.0f} ms after "
          f"the close (grace {grace} ms)")
    # never before the grace: the False answer was received at least that long after the
    # DELETE was sent
    early_ms = (got_false - close_sent) * 1000
    assert early_ms >= grace - 50, f"offline after only {early_ms:.0f} ms, grace is {grace}"
    assert delay_ms <= upper_ms, f"{delay_ms:.0f} ms"
    assert client.conversations.v1.services(IS).users("alice").fetch().is_online is False
    # closing again: the session no longer exists
    assert_twilio_error(device.call("DELETE", f"/sessions/{session_id}"), 404, 20404)


def test_reconnect_inside_grace_is_not_a_transition(client, server, chat_service, api_key):
    """A reconnect inside the grace produces no offline/online transition
    (docs/ARCHITECTURE.md §4)."""
    IS = chat_service.sid
    client.chat.v2.services(IS).update(reachability_enabled=True)
    set_timings(server, IS, ping=1000, ttl=5000, grace=1500)
    device = Device(server, mint(api_key, IS))
    first = device.open()["session_id"]
    seq = reach(server, IS, "alice")["sequence"]
    device.close(first)
    time.sleep(0.3)
    second = device.open()["session_id"]
    assert second != first
    time.sleep(1.5 + SWEEP_MS / 1000 + 0.2)  # past the first session's grace
    assert chat_online(client, IS)() is True
    view = reach(server, IS, "alice")
    assert view["is_online"] is True and view["session_count"] == 1
    assert view["sequence"] == seq, "reconnect inside the grace must not fire transitions"
    device.close(second)


def test_reconnect_after_user_deleted_is_online(client, server, presence_service, api_key):
    """A user with a live session is online (docs/ARCHITECTURE.md §5.6). Deleting a user
    while its client is connected, then the client reconnecting (which re-creates the user,
    docs/ARCHITECTURE.md §4), must leave the re-created user online."""
    IS = presence_service.sid
    set_timings(server, IS, ping=1000, ttl=30000, grace=GRACE_MS)
    device = Device(server, mint(api_key, IS, identity="zed"))
    old = device.open()["session_id"]
    old_sid = client.chat.v2.services(IS).users("zed").fetch().sid
    assert client.chat.v2.services(IS).users("zed").delete() is True
    assert_twilio_error(device.user("zed"), 404, 20404)

    opened = device.open()  # the app reconnects
    assert opened["identity"] == "zed"
    user = client.chat.v2.services(IS).users("zed").fetch()
    assert user.sid != old_sid  # a new user
    view = reach(server, IS, "zed")
    assert user.is_online is True, (f"re-created user with a live session reads is_online="
                                    f"{user.is_online!r}; native view {view}")
    assert view["is_online"] is True
    device.close(opened["session_id"])
    with contextlib.suppress(AssertionError):
        device.close(old)


# --------------------------------------------------------------------------- 4: notifiable


def test_client_binding_makes_user_notifiable(client, server, presence_service, api_key):
    """4. Register through the client API → is_notifiable True; remove the last → False."""
    IS = presence_service.sid
    device = Device(server, mint(api_key, IS))
    users = client.chat.v2.services(IS).users
    first = device.register("fcm", address="fcm-token-1")
    assert first["binding_type"] == "fcm" and first["identity"] == "alice"
    assert first["service_sid"] == IS and first["sid"].startswith("BS")
    user = users("alice").fetch()
    assert first["user_sid"] == user.sid
    assert user.is_notifiable is True
    assert user.is_online is None  # never had a session since reachability was enabled
    assert client.conversations.v1.services(IS).users("alice").fetch().is_notifiable is True
    descriptor = device.user("alice").json()
    assert descriptor["is_notifiable"] is True and descriptor["user_sid"] == user.sid

    second = device.register("apn", address="apn-token-1")
    assert second["sid"] != first["sid"]
    device.unregister(first["sid"])  # by SID
    assert users("alice").fetch().is_notifiable is True  # one binding left
    device.unregister(second["endpoint"])  # by endpoint
    assert users("alice").fetch().is_notifiable is False
    assert client.conversations.v1.services(IS).users("alice").fetch().is_notifiable is False
    assert device.user("alice").json()["is_notifiable"] is False
    # unregistering again: nothing left to remove
    resp = device.call("DELETE", f"/bindings/{second['sid']}")
    assert_twilio_error(resp, 404, 20404)


# --------------------------------------------------------------------------- 5: disabled


def test_reachability_disabled_hides_state_until_enabled(client, server, chat_service, api_key):
    """5. Disabled → null even with a live session; enabling makes it online at once."""
    IS = chat_service.sid
    assert chat_service.reachability_enabled is False
    set_timings(server, IS)
    device = Device(server, mint(api_key, IS))
    opened = device.open()
    assert opened["reachability_enabled"] is False
    users = client.chat.v2.services(IS).users

    user = users("alice").fetch()
    assert user.is_online is None and user.is_notifiable is None
    conv = client.conversations.v1.services(IS).users("alice").fetch()
    assert conv.is_online is None and conv.is_notifiable is None
    descriptor = device.user("alice").json()
    assert descriptor["reachability_enabled"] is False
    assert descriptor["is_online"] is None and descriptor["is_notifiable"] is None
    assert reach(server, IS, "alice")["is_online"] is None
    assert native(server, f"/services/{IS}/reachability", online="true")["users"] == []
    # sessions are still tracked while disabled
    sessions = native(server, f"/services/{IS}/users/alice/sessions")["sessions"]
    assert [s["id"] for s in sessions] == [opened["session_id"]]

    device.ping(opened["session_id"])
    enabled = client.chat.v2.services(IS).update(reachability_enabled=True)
    assert enabled.reachability_enabled is True
    user = users("alice").fetch()  # no wait: the update returns after the transition
    assert user.is_online is True
    assert user.is_notifiable is None  # never had a binding
    assert client.conversations.v1.services(IS).users("alice").fetch().is_online is True
    assert device.user("alice").json()["is_online"] is True
    assert reach(server, IS, "alice")["is_online"] is True

    # disable again through the Conversations configuration (one flag for every dialect)
    cfg = client.conversations.v1.services(IS).configuration().update(
        reachability_enabled=False)
    assert cfg.reachability_enabled is False
    assert client.chat.v2.services(IS).fetch().reachability_enabled is False
    assert users("alice").fetch().is_online is None
    # go offline while disabled, then enable: the state is unknown again (null)
    device.close(opened["session_id"])
    time.sleep((GRACE_MS + SWEEP_MS) / 1000 + 0.3)
    client.chat.v2.services(IS).update(reachability_enabled=True)
    user = users("alice").fetch()
    assert user.is_online is None, "not online since reachability was (re-)enabled"


# --------------------------------------------------------------------------- 6: isolation


def test_token_for_one_service_cannot_touch_another(client, server, presence_service, api_key):
    """6. Service isolation (docs/ARCHITECTURE.md §5.7) and a grant naming no service."""
    A = presence_service.sid
    B = client.chat.v2.services.create(friendly_name=unique("svc-b")).sid
    try:
        client.chat.v2.services(B).update(reachability_enabled=True)
        # nothing here pings: a TTL far beyond the test's length keeps both sessions alive
        set_timings(server, A, ttl=30000)
        set_timings(server, B, ttl=30000)
        dev_a = Device(server, mint(api_key, A))
        opened = dev_a.open()
        assert opened["service_sid"] == A
        binding = dev_a.register("gcm")
        assert binding["service_sid"] == A
        assert client.chat.v2.services(B).users.list() == []  # nothing was created in B
        assert client.chat.v2.services(A).users("alice").fetch().is_online is True

        bob_b = client.chat.v2.services(B).users.create(identity="bob")
        alice_b = client.chat.v2.services(B).users.create(identity="alice")
        alice_a = client.chat.v2.services(A).users("alice").fetch()
        assert_twilio_error(dev_a.user("bob"), 404, 20404)  # bob exists only in B
        same_name = dev_a.user("alice").json()
        assert same_name["user_sid"] == alice_a.sid != alice_b.sid
        assert client.chat.v2.services(B).users("alice").fetch().is_online is None
        assert client.chat.v2.services(B).users("alice").fetch().is_notifiable is None

        # B's own session and binding cannot be touched with A's token
        dev_b = Device(server, mint(api_key, B))
        session_b = dev_b.open()["session_id"]
        binding_b = dev_b.register("apn")
        for resp in (dev_a.call("POST", f"/sessions/{session_b}/ping"),
                     dev_a.call("DELETE", f"/sessions/{session_b}"),
                     dev_a.call("DELETE", f"/bindings/{binding_b['sid']}"),
                     dev_a.call("DELETE", f"/bindings/{quote(binding_b['endpoint'], safe='')}")):
            assert resp.status_code in (403, 404), (resp.request.method, resp.request.url,
                                                    resp.status_code, resp.text)
        sessions_b = native(server, f"/services/{B}/users/alice/sessions")["sessions"]
        assert [s["id"] for s in sessions_b] == [session_b]
        assert client.chat.v2.services(B).users("alice").fetch().is_notifiable is True
        assert client.chat.v2.services(B).users("bob").fetch().is_online is None
        assert ({(u.identity, u.sid) for u in client.chat.v2.services(B).users.list()}
                == {("alice", alice_b.sid), ("bob", bob_b.sid)})
        # resuming B's session id with A's token, or with another identity's token, opens
        # a new session instead of taking it over
        for dev in (dev_a, Device(server, mint(api_key, B, identity="bob"))):
            other = dev.open(resume=session_b)
            assert other["resumed"] is False and other["session_id"] != session_b, other
            dev.close(other["session_id"])
        again = dev_b.open(resume=session_b)  # the owner may resume it
        assert again["resumed"] is True and again["session_id"] == session_b, again
        sessions_b = native(server, f"/services/{B}/users/alice/sessions")["sessions"]
        assert [s["id"] for s in sessions_b] == [session_b]
        dev_b.close(session_b)
        dev_a.close(opened["session_id"])

        # a grant naming a service that does not exist → 401/20106
        ghost = "IS" + secrets.token_hex(16)
        dev_ghost = Device(server, mint(api_key, ghost))
        assert_twilio_error(dev_ghost.call("POST", "/sessions", json={}), 401, 20106)
        assert_twilio_error(dev_ghost.user("alice"), 401, 20106)
    finally:
        with contextlib.suppress(Exception):
            client.chat.v2.services(B).delete()


# --------------------------------------------------------------------------- 7: bad tokens


def _payload(token: str) -> dict:
    return json.loads(b64url_decode(token.split(".")[1]))


def test_token_errors(client, server, presence_service, api_key):
    """7. Each token failure → 401 with its Twilio code (docs/twilio-compatibility.md §9)."""
    IS = presence_service.sid
    now = int(time.time())

    def open_with(token, header="Authorization"):
        return Device(server, token, header).call("POST", "/sessions", json={})

    good = mint(api_key, IS)
    assert open_with(good).status_code == 201
    # nbf inside the 30 s leeway is accepted
    assert open_with(mint(api_key, IS, nbf=now + 10, valid_until=now + 3600)).status_code == 201
    # exactly 24 h is the maximum TTL, still accepted
    assert open_with(mint(api_key, IS, ttl=MAX_TOKEN_TTL)).status_code == 201

    cases = {}
    cases["expired"] = (mint(api_key, IS, nbf=now - 3600, valid_until=now - 120), 20104)
    cases["not yet valid"] = (mint(api_key, IS, nbf=now + 600, valid_until=now + 1200), 20105)
    cases["ttl over 24 h"] = (mint(api_key, IS, ttl=MAX_TOKEN_TTL + 60), 20157)

    header, payload, signature = good.split(".")
    claims = _payload(good)
    claims["grants"]["identity"] = "mallory"  # payload changed, signature kept
    cases["tampered payload"] = (f"{header}.{b64url(json.dumps(claims).encode())}.{signature}",
                                 20107)
    flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
    cases["tampered signature"] = (f"{header}.{payload}.{flipped}", 20107)
    none_header = b64url(json.dumps({"alg": "none", "typ": "JWT",
                                     "cty": "twilio-fpa;v=1"}).encode())
    cases["alg none"] = (f"{none_header}.{payload}.", 20102)
    cases["HS512"] = (pyjwt.encode(_payload(good), api_key["secret"], algorithm="HS512",
                                   headers={"cty": "twilio-fpa;v=1"}), 20102)
    other_account = dict(_payload(good), sub="AC" + secrets.token_hex(16))
    cases["other account"] = (pyjwt.encode(other_account, api_key["secret"], algorithm="HS256",
                                           headers={"cty": "twilio-fpa;v=1"}), 20103)
    unknown_key = {"sid": "SK" + secrets.token_hex(16), "secret": secrets.token_hex(32)}
    cases["unknown key"] = (mint(unknown_key, IS), 20103)
    no_grant = AccessToken(ACCOUNT_SID, api_key["sid"], api_key["secret"], identity="alice")
    cases["no chat grant"] = (no_grant.to_jwt(), 20106)
    cases["not a jwt"] = ("not-a-jwt", 20101)

    failures = []
    for name, (token, code) in cases.items():
        for header_name in ("Authorization", "X-Twilio-Token"):
            resp = open_with(token, header_name)
            try:
                assert_twilio_error(resp, 401, code)
            except AssertionError:
                failures.append(f"{name} via {header_name}: expected 401/{code}, got "
                                f"{resp.status_code} {resp.text}")
    assert not failures, "\n".join(failures)

    no_token = requests.post(f"{server.base}/client/v1/sessions", json={}, timeout=30)
    assert no_token.status_code == 401, no_token.text
    assert set(no_token.json()) == {"code", "message", "more_info", "status"}


def test_revoked_key_tokens_stop_working(client, server, presence_service):
    """7. `reachd keys revoke` → tokens signed with that key get 401/20103 at once."""
    IS = presence_service.sid
    key = create_key(server)
    device = Device(server, mint(key, IS))
    session_id = device.open()["session_id"]
    device.ping(session_id)
    reachd_cli(server, "keys", "revoke", key["sid"])
    listed = reachd_cli(server, "keys", "list").stdout
    assert key["sid"] in listed and key["secret"] not in listed
    assert_twilio_error(device.call("POST", f"/sessions/{session_id}/ping"), 401, 20103)
    assert_twilio_error(device.call("POST", "/sessions", json={}), 401, 20103)
    assert_twilio_error(Device(server, mint(key, IS)).call("POST", "/sessions", json={}),
                        401, 20103)


# --------------------------------------------------------------------------- 8: native reads


def test_native_reachability_reads(client, server, presence_service, api_key):
    """8. Bulk reachability, online paging, sessions list, sequence growth."""
    IS = presence_service.sid
    # nothing here pings: a TTL far beyond the test's length keeps every session alive
    set_timings(server, IS, ttl=30000)
    users = client.chat.v2.services(IS).users
    carol = users.create(identity="carol")  # known, never online
    devices, sessions = {}, {}
    for name in ("alice", "bob", "dave"):
        devices[name] = Device(server, mint(api_key, IS, identity=name))
        sessions[name] = devices[name].open(endpoint=f"{name}-laptop")["session_id"]

    bulk = native(server, f"/services/{IS}/reachability",
                  identity=["alice", "bob", "carol", "nobody"])
    assert bulk["not_found"] == ["nobody"]
    by_id = {u["identity"]: u for u in bulk["users"]}
    assert set(by_id) == {"alice", "bob", "carol"}
    for name in ("alice", "bob"):
        view = by_id[name]
        assert view["is_online"] is True and view["session_count"] == 1
        assert view["online_since"] and view["last_seen"]
        assert view["user_sid"] == users(name).fetch().sid
    assert by_id["carol"]["user_sid"] == carol.sid
    assert by_id["carol"]["is_online"] is None and by_id["carol"]["session_count"] == 0
    assert by_id["carol"]["online_since"] is None

    # page through online users one at a time
    seen, token, pages = [], None, 0
    while True:
        params = {"online": "true", "limit": 1}
        if token:
            params["page_token"] = token
        page = native(server, f"/services/{IS}/reachability", **params)
        pages += 1
        assert len(page["users"]) <= 1
        seen += [u["identity"] for u in page["users"]]
        token = page["next_page_token"]
        if not token:
            break
        assert pages < 10
    assert sorted(seen) == ["alice", "bob", "dave"] and len(seen) == 3
    everyone = native(server, f"/services/{IS}/reachability", online="true")
    assert sorted(u["identity"] for u in everyone["users"]) == ["alice", "bob", "dave"]
    assert everyone["next_page_token"] is None

    # sessions of a user, by identity and by SID
    listed = native(server, f"/services/{IS}/users/alice/sessions")
    alice_sid = users("alice").fetch().sid
    assert listed["identity"] == "alice" and listed["user_sid"] == alice_sid
    [s] = listed["sessions"]
    assert s["id"] == sessions["alice"] and s["endpoint"] == "alice-laptop"
    assert s["transport"] == "http"
    assert native(server, f"/services/{IS}/users/{alice_sid}/sessions") == listed
    second = devices["alice"].open()["session_id"]
    ids = [x["id"] for x in native(server, f"/services/{IS}/users/alice/sessions")["sessions"]]
    assert sorted(ids) == sorted([sessions["alice"], second])
    assert reach(server, IS, "alice")["session_count"] == 2

    # sequence grows with each transition, and only then
    alice = devices["alice"]
    seqs = [reach(server, IS, "alice")["sequence"]]
    alice.ping(second)
    alice.close(second)  # not the last session: no transition
    assert reach(server, IS, "alice")["sequence"] == seqs[-1]
    binding = alice.register("fcm")
    seqs.append(reach(server, IS, "alice")["sequence"])          # notifiable
    alice.unregister(binding["sid"])
    seqs.append(reach(server, IS, "alice")["sequence"])          # not notifiable
    alice.close(sessions["alice"])
    wait_for(lambda: reach(server, IS, "alice")["is_online"], lambda v: v is False,
             timeout=(GRACE_MS + SWEEP_MS) / 1000 + 2)
    offline = reach(server, IS, "alice")
    seqs.append(offline["sequence"])                              # offline
    alice.open()
    seqs.append(reach(server, IS, "alice")["sequence"])          # online again
    assert all(b > a for a, b in zip(seqs, seqs[1:])), seqs
    assert offline["session_count"] == 0 and offline["online_since"] is None
    assert offline["last_seen"] is not None and offline["is_notifiable"] is False
    online_now = sorted(u["identity"] for u in
                        native(server, f"/services/{IS}/reachability", online="true")["users"])
    assert online_now == ["alice", "bob", "dave"]

    # unknown user → 404 with the four-key body
    resp = requests.get(f"{server.base}/api/v1/services/{IS}/users/nobody/sessions",
                        auth=BASIC, timeout=30)
    assert_twilio_error(resp, 404, 20404)


# --------------------------------------------------------------------------- 9: twilio-node


@pytest.fixture(scope="module")
def twilio_node_modules():
    """twilio-node from tests/compat/node's lock file, installed into a temporary folder."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        pytest.skip("node/npm not available")
    node_dir = Path(__file__).resolve().parent.parent / "node"
    with tempfile.TemporaryDirectory(prefix="reachd-twilio-node-") as tmp:
        for name in ("package.json", "package-lock.json", ".npmrc"):
            shutil.copy(node_dir / name, tmp)
        proc = subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
                              cwd=tmp, capture_output=True, text=True, timeout=300)
        if proc.returncode != 0:
            pytest.skip(f"npm ci failed: {proc.stderr[-500:]}")
        yield Path(tmp) / "node_modules"


NODE_MINT = """
const AccessToken = require('twilio').jwt.AccessToken;
const [account, keySid, secret, service, identity] = process.argv.slice(1);
const token = new AccessToken(account, keySid, secret, {identity, ttl: 3600});
token.addGrant(new AccessToken.ChatGrant({serviceSid: service}));
process.stdout.write(token.toJwt());
"""


def test_twilio_node_token_opens_session(client, server, presence_service, api_key,
                                         twilio_node_modules):
    """9. A token minted by twilio-node (iat, no nbf; other header order) is accepted."""
    IS = presence_service.sid
    proc = subprocess.run(["node", "-e", NODE_MINT, ACCOUNT_SID, api_key["sid"],
                           api_key["secret"], IS, "nora"],
                          env={**os.environ, "NODE_PATH": str(twilio_node_modules)},
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    token = proc.stdout.strip()
    claims = _payload(token)
    assert "iat" in claims and "nbf" not in claims  # the twilio-node shape
    assert claims["grants"] == {"identity": "nora", "chat": {"service_sid": IS}}
    device = Device(server, token)
    opened = device.open()
    assert opened["identity"] == "nora" and opened["service_sid"] == IS
    assert client.chat.v2.services(IS).users("nora").fetch().is_online is True
    device.close(opened["session_id"])
