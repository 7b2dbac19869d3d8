"""Outbound webhooks and the event feed, observed by a real HTTP receiver.

Twilio-format targets (docs/twilio-compatibility.md §8): the Chat service post-event webhook,
the Conversations service webhook configuration and the Conversations account webhook get
`onUserAdded` / `onUserUpdated` as form parameters, signed with `X-Twilio-Signature`, which
twilio-python's own `RequestValidator` must accept. Native endpoints
(`/api/v1/services/{IS}/webhooks`) get JSON signed per the Standard Webhooks spec, verified
with the `standardwebhooks` package. The event feed (`/api/v1/services/{IS}/events`) is read
page by page and as a server-sent event stream with `Last-Event-ID` resume.

Each test has its own receiver: a `http.server` on a random 127.0.0.1 port that records every
request (method, path with query, headers, raw body) and answers 200 unless a route was given
a script of replies (statuses, optionally delayed).
"""

from __future__ import annotations

import base64
import collections
import contextlib
import errno
import json
import re
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

import pytest
import requests
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from twilio.request_validator import RequestValidator

from conftest import ACCOUNT_SID, AUTH_TOKEN, unique
from test_presence import Device, create_key, mint, set_timings

BASIC = (ACCOUNT_SID, AUTH_TOKEN)
TWILIO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
RFC3339_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|\+00:00)$")
WAIT = 10.0     # seconds to wait for an expected request
QUIET = 1.5     # seconds to wait after a barrier before concluding that nothing else comes
# per-service timings (ms): no offline grace, and a TTL long enough that a session left open
# never times out in the middle of a test (closes are explicit)
TIMINGS = dict(ping=1000, ttl=30000, grace=0)

TWILIO_REQUIRED = {"EventType", "AccountSid", "UserSid", "Identity", "RoleSid", "Attributes",
                   "DateCreated", "DateUpdated", "Source", "RetryCount", "Sequence"}
TWILIO_OPTIONAL = {"FriendlyName", "IsOnline", "IsNotifiable", "Reason", "ClientIdentity"}
CHAT_KEYS = {"InstanceSid", "ServiceSid"}
CONV_KEYS = {"ChatServiceSid"}
NATIVE_DATA_KEYS = {"account_sid", "service_sid", "user_sid", "identity", "is_online",
                    "is_notifiable", "update_reasons", "reason", "sequence", "last_seen",
                    "session_count", "source"}


# --------------------------------------------------------------------------- receiver


@dataclass
class Reply:
    status: int = 200
    delay: float = 0.0
    body: str = "ok"


@dataclass
class Hit:
    method: str
    path: str            # path and query exactly as requested
    headers: dict        # lower-cased names
    body: bytes
    at: float            # time.monotonic() when the request was read

    @property
    def route(self) -> str:
        return urlsplit(self.path).path

    @property
    def query(self) -> str:
        return urlsplit(self.path).query

    def json(self):
        return json.loads(self.body)


class Receiver:
    """A webhook receiver on 127.0.0.1:<random port>; routes can be scripted with replies."""

    def __init__(self, port: int = 0):
        self.hits: list[Hit] = []
        self.cond = threading.Condition()
        self.scripts: dict[str, collections.deque] = {}
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                hit = Hit(self.command, self.path,
                          {k.lower(): v for k, v in self.headers.items()}, body, time.monotonic())
                with receiver.cond:
                    receiver.hits.append(hit)
                    script = receiver.scripts.get(hit.route)
                    reply = script.popleft() if script else Reply()
                    receiver.cond.notify_all()
                if reply.delay:
                    time.sleep(reply.delay)
                payload = reply.body.encode()
                with contextlib.suppress(OSError):  # the sender may have given up (timeout)
                    self.send_response(reply.status)
                    self.send_header("Content-Type", "text/plain")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _serve

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def url(self, route: str, query: str = "") -> str:
        return self.base + route + (f"?{query}" if query else "")

    def script(self, route: str, *replies):
        """Answer the next requests to `route` with these (int statuses or Reply), then 200."""
        with self.cond:
            self.scripts[route] = collections.deque(
                r if isinstance(r, Reply) else Reply(r) for r in replies)

    def to(self, route: str) -> list[Hit]:
        with self.cond:
            return [h for h in self.hits if h.route == route]

    def wait(self, route: str, count: int = 1, timeout: float = WAIT,
             where=lambda hit: True) -> list[Hit]:
        """Wait until `route` got at least `count` requests matching `where`; return them."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                got = [h for h in self.hits if h.route == route and where(h)]
                if len(got) >= count:
                    return got
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"{route}: {len(got)} matching request(s) of {count} within {timeout} s; "
                        f"all to it: {[describe(h) for h in self.hits if h.route == route]}")
                self.cond.wait(remaining)

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def describe(hit: Hit) -> str:
    if hit.headers.get("content-type", "").startswith("application/json"):
        return f"{hit.method} {hit.path} {hit.body[:300]!r}"
    return f"{hit.method} {hit.path} {twilio_params(hit)}"


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


# --------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def api_key(server) -> dict:
    return create_key(server)


def native_url(server, path: str) -> str:
    return f"{server.base}/api/v1{path}"


def create_endpoint(server, IS: str, url: str, **extra) -> dict:
    resp = requests.post(native_url(server, f"/services/{IS}/webhooks"),
                         json={"url": url, **extra}, auth=BASIC, timeout=30)
    assert resp.status_code == 201, resp.text
    body = resp.json()
    assert body["id"].startswith("WH"), body
    assert body["secret"].startswith("whsec_"), body
    assert body["url"] == url and body["disabled"] is False, body
    return body


def get_endpoint(server, IS: str, wh: str) -> dict:
    resp = requests.get(native_url(server, f"/services/{IS}/webhooks/{wh}"), auth=BASIC,
                        timeout=30)
    assert resp.status_code == 200, resp.text
    return resp.json()


def deliveries(server, IS: str, wh: str, **params) -> list[dict]:
    resp = requests.get(native_url(server, f"/services/{IS}/webhooks/{wh}/deliveries"),
                        params=params, auth=BASIC, timeout=30)
    assert resp.status_code == 200, resp.text
    return resp.json()["deliveries"]


def twilio_params(hit: Hit, configured_query: str = "") -> dict:
    """The form parameters of a Twilio-format request (body for POST, query for GET)."""
    if hit.method == "POST":
        pairs = parse_qsl(hit.body.decode(), keep_blank_values=True, strict_parsing=bool(hit.body))
    else:
        pairs = parse_qsl(hit.query, keep_blank_values=True)
        configured = parse_qsl(configured_query, keep_blank_values=True)
        assert pairs[:len(configured)] == configured, (hit.path, configured_query)
        pairs = pairs[len(configured):]
    names = [k for k, _ in pairs]
    assert len(names) == len(set(names)), f"repeated parameter in {pairs}"
    return dict(pairs)


def check_twilio_request(receiver: Receiver, hit: Hit, configured_url: str) -> dict:
    """Headers, transport and X-Twilio-Signature of one Twilio-format request; its params."""
    split = urlsplit(configured_url)
    assert hit.headers.get("user-agent", "").startswith("reachd/"), hit.headers
    assert hit.headers.get("i-twilio-idempotency-token"), hit.headers
    signature = hit.headers.get("x-twilio-signature")
    assert signature, hit.headers
    validator = RequestValidator(AUTH_TOKEN)
    params = twilio_params(hit, split.query)
    if hit.method == "POST":
        assert hit.path == split.path + (f"?{split.query}" if split.query else ""), hit.path
        content_type = hit.headers.get("content-type", "").replace(" ", "").lower()
        assert content_type == "application/x-www-form-urlencoded;charset=utf-8", hit.headers
        assert validator.validate(configured_url, params, signature), \
            f"signature does not validate for {configured_url} {params}"
        flipped = dict(params, Identity=params["Identity"] + "x")
        assert not validator.validate(configured_url, flipped, signature)
        assert not validator.validate(configured_url + "&x=1" if split.query
                                      else configured_url + "?x=1", params, signature)
    else:
        assert hit.method == "GET" and hit.body == b"", (hit.method, hit.body)
        full = receiver.base + hit.path
        assert validator.validate(full, {}, signature), f"signature does not validate for {full}"
        assert not validator.validate(full.replace("Identity=", "Identity=x", 1), {}, signature)
        assert not validator.validate(configured_url, params, signature)
    return params


def check_twilio_params(p: dict, fmt: str, IS: str, user, source: str):
    """The parameter set of one event against the user as REST shows it."""
    service_keys = CHAT_KEYS if fmt == "chat" else CONV_KEYS
    assert TWILIO_REQUIRED | service_keys <= set(p), f"missing {TWILIO_REQUIRED | service_keys - set(p)}: {p}"
    assert set(p) <= TWILIO_REQUIRED | TWILIO_OPTIONAL | service_keys, \
        f"unexpected {set(p) - TWILIO_REQUIRED - TWILIO_OPTIONAL - service_keys}: {p}"
    if fmt == "chat":
        assert p["InstanceSid"] == IS and p["ServiceSid"] == IS, p
    else:
        assert p["ChatServiceSid"] == IS, p
    assert p["EventType"] in ("onUserAdded", "onUserUpdated"), p
    assert p["AccountSid"] == ACCOUNT_SID
    assert p["UserSid"] == user.sid and p["Identity"] == user.identity, p
    assert p["RoleSid"] == user.role_sid, p
    assert json.loads(p["Attributes"]) == json.loads(user.attributes or "{}"), p
    if user.friendly_name is None:
        assert "FriendlyName" not in p, p
    else:
        assert p["FriendlyName"] == user.friendly_name, p
    date_re = TWILIO_DATE if fmt == "chat" else RFC3339_UTC
    for key in ("DateCreated", "DateUpdated"):
        assert date_re.match(p[key]), (key, p[key])
    created = datetime.fromisoformat(p["DateCreated"].replace("Z", "+00:00")).replace(microsecond=0)
    assert created == user.date_created, (p["DateCreated"], user.date_created)
    assert p["Source"] == source, p
    if source == "SDK":
        assert p["ClientIdentity"] == user.identity, p
    else:
        assert "ClientIdentity" not in p, p
    assert p["Sequence"].isdigit(), p
    for key in ("IsOnline", "IsNotifiable"):
        assert p.get(key, "true") in ("true", "false"), p


def verify_native(hit: Hit, secret: str) -> dict:
    """Standard Webhooks verification with the reference library; the parsed body."""
    assert hit.method == "POST", hit
    assert hit.headers.get("content-type", "").startswith("application/json"), hit.headers
    assert hit.headers.get("user-agent", "").startswith("reachd/"), hit.headers
    for name in ("webhook-id", "webhook-timestamp", "webhook-signature"):
        assert hit.headers.get(name), (name, hit.headers)
    assert abs(int(hit.headers["webhook-timestamp"]) - time.time()) < 60, hit.headers
    payload = Webhook(secret).verify(hit.body, hit.headers)
    assert payload == json.loads(hit.body)
    # a wrong secret or a changed body fails
    other = "whsec_" + base64.b64encode(b"0" * 24).decode()
    with pytest.raises(WebhookVerificationError):
        Webhook(other).verify(hit.body, hit.headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(hit.body.replace(b'"identity"', b'"identitY"'), hit.headers)
    check_native_shape(payload)
    return payload


def check_native_shape(payload: dict):
    assert set(payload) == {"type", "timestamp", "data"}, payload
    assert payload["type"] in ("user.added", "user.updated", "user.deleted",
                               "user.reachability_updated"), payload
    assert RFC3339_UTC.match(payload["timestamp"]), payload
    data = payload["data"]
    assert set(data) == NATIVE_DATA_KEYS, f"data keys {sorted(data)}"
    assert data["account_sid"] == ACCOUNT_SID
    assert data["service_sid"].startswith("IS") and data["user_sid"].startswith("US"), data
    assert isinstance(data["sequence"], int), data
    assert data["session_count"] is None or isinstance(data["session_count"], int), data
    assert isinstance(data["update_reasons"], list), data
    assert data["source"] in ("SDK", "API"), data
    for key in ("is_online", "is_notifiable"):
        assert data[key] in (True, False, None), data


def enable_with_timings(client, server, IS: str, timings=TIMINGS, **chat_update):
    svc = client.chat.v2.services(IS).update(reachability_enabled=True, **chat_update)
    assert svc.reachability_enabled is True
    set_timings(server, IS, **timings)
    return svc


# --------------------------------------------------------------------------- 1-2: Chat webhook


def test_chat_post_webhook_reachability_events(client, server, chat_service, api_key, receiver):
    """1. Chat POST webhook: first contact → onUserAdded, open → onUserUpdated online, close →
    onUserUpdated offline; every request carries a valid X-Twilio-Signature over the URL
    exactly as configured (query string included)."""
    IS = chat_service.sid
    url = receiver.url("/chat", "src=reach")
    svc = enable_with_timings(client, server, IS, post_webhook_url=url, webhook_method="POST")
    assert svc.post_webhook_url == url and svc.webhook_method == "POST"
    assert not svc.webhook_filters  # default: every event

    device = Device(server, mint(api_key, IS, identity="alice"))
    session = device.open()["session_id"]
    added, online = receiver.wait("/chat", 2)[:2]
    device.close(session)
    offline = receiver.wait("/chat", 3)[2]
    user = client.chat.v2.services(IS).users("alice").fetch()

    params = [check_twilio_request(receiver, h, url) for h in (added, online, offline)]
    for p in params:
        check_twilio_params(p, "chat", IS, user, source="SDK")
        assert p["RetryCount"] == "0", p
    a, on, off = params
    assert a["EventType"] == "onUserAdded", a
    assert on["EventType"] == "onUserUpdated" and on["IsOnline"] == "true", on
    assert on["Reason"] == "session_opened", on
    assert "IsNotifiable" not in on, "is_notifiable is null in REST (no binding ever): omitted"
    assert off["EventType"] == "onUserUpdated" and off["IsOnline"] == "false", off
    assert off["Reason"] == "session_closed", off
    sequences = [int(p["Sequence"]) for p in params]
    assert sequences == sorted(sequences) and len(set(sequences)) == 3, sequences
    tokens = [h.headers["i-twilio-idempotency-token"] for h in (added, online, offline)]
    assert len(set(tokens)) == 3, tokens
    assert len(receiver.to("/chat")) == 3, [describe(h) for h in receiver.to("/chat")]


def test_chat_get_webhook(client, server, chat_service, api_key, receiver):
    """2. webhook_method GET: the parameters go in the query after the configured one; the
    signature covers the full URL with no parameters."""
    IS = chat_service.sid
    url = receiver.url("/chat-get", "src=reach")
    svc = enable_with_timings(client, server, IS, post_webhook_url=url,
                              webhook_method="GET")
    assert svc.webhook_method == "GET"
    device = Device(server, mint(api_key, IS, identity="gina"))
    device.open()
    hits = receiver.wait("/chat-get", 2)
    user = client.chat.v2.services(IS).users("gina").fetch()
    params = [check_twilio_request(receiver, h, url) for h in hits]
    for h, p in zip(hits, params):
        assert h.method == "GET" and h.query.startswith("src=reach&"), h.path
        check_twilio_params(p, "chat", IS, user, source="SDK")
    assert [p["EventType"] for p in params] == ["onUserAdded", "onUserUpdated"]
    assert params[1]["IsOnline"] == "true" and params[1]["Reason"] == "session_opened"

    # REST create with the header: GET too, Source=API
    created = client.chat.v2.services(IS).users.create(identity="hank", friendly_name="Hank H",
                                                      x_twilio_webhook_enabled="true")
    [hit] = receiver.wait("/chat-get", where=lambda h: "Identity=hank" in h.query)
    p = check_twilio_request(receiver, hit, url)
    check_twilio_params(p, "chat", IS, created, source="API")
    assert p["EventType"] == "onUserAdded" and p["FriendlyName"] == "Hank H", p


@pytest.mark.parametrize("method", ["POST", "GET"])
def test_signature_with_special_characters(client, chat_service, receiver, method):
    """1-2. Non-ASCII and form-significant characters (space & = + % #) in values and in the
    configured query are encoded so that the receiver decodes the stored values and the
    signature (computed over the decoded values) validates."""
    IS = chat_service.sid
    url = receiver.url("/special", "q=a%20b&plus=1%2B1&empty=")
    client.chat.v2.services(IS).update(post_webhook_url=url, webhook_method=method)
    name = "Zoë & Co + 1=1 100% #1 🚀"
    attributes = json.dumps({"note": "b c&d=e+f?g#h", "ü": "日本"}, ensure_ascii=False)
    user = client.chat.v2.services(IS).users.create(
        identity="zoë+tag@example.com", friendly_name=name, attributes=attributes,
        x_twilio_webhook_enabled="true")
    [hit] = receiver.wait("/special")
    p = check_twilio_request(receiver, hit, url)
    check_twilio_params(p, "chat", IS, user, source="API")
    assert p["Identity"] == "zoë+tag@example.com" and p["FriendlyName"] == name, p
    assert json.loads(p["Attributes"]) == json.loads(attributes), p


def test_chat_webhook_binding_and_enable_transitions(client, server, chat_service, api_key,
                                                     receiver):
    """1. Reachability transitions other than open/close: enabling reachability with a live
    session (reachability_enabled), first binding (binding_added), last binding removed
    (binding_removed); the webhook agrees with REST. While reachability is disabled no
    transition is sent."""
    IS = chat_service.sid
    url = receiver.url("/causes")
    client.chat.v2.services(IS).update(post_webhook_url=url)  # reachability still disabled
    set_timings(server, IS, **TIMINGS)
    create_endpoint(server, IS, receiver.url("/barrier"))
    device = Device(server, mint(api_key, IS, identity="cy"))
    device.open()
    [added] = receiver.wait("/causes")
    assert twilio_params(added)["EventType"] == "onUserAdded"
    client.chat.v2.services(IS).users.create(identity="barrier", x_twilio_webhook_enabled="true")
    receiver.wait("/causes", 2)
    time.sleep(QUIET)
    assert [twilio_params(h)["Identity"] for h in receiver.to("/causes")] == ["cy", "barrier"], \
        "a disabled service sends no transition"

    client.chat.v2.services(IS).update(reachability_enabled=True)
    [enabled] = receiver.wait("/causes", 3)[2:]
    p = check_twilio_request(receiver, enabled, url)
    user = client.chat.v2.services(IS).users("cy").fetch()
    check_twilio_params(p, "chat", IS, user, source="SDK")
    assert (p["EventType"], p["IsOnline"], p["Reason"]) == ("onUserUpdated", "true",
                                                            "reachability_enabled"), p

    binding = device.register("fcm")
    [bound] = receiver.wait("/causes", 4)[3:]
    p = check_twilio_request(receiver, bound, url)
    assert (p["IsNotifiable"], p["Reason"], p["IsOnline"]) == ("true", "binding_added", "true"), p
    assert client.chat.v2.services(IS).users("cy").fetch().is_notifiable is True
    device.unregister(binding["sid"])
    [unbound] = receiver.wait("/causes", 5)[4:]
    p = check_twilio_request(receiver, unbound, url)
    assert (p["IsNotifiable"], p["Reason"]) == ("false", "binding_removed"), p
    assert client.chat.v2.services(IS).users("cy").fetch().is_notifiable is False
    seqs = [int(twilio_params(h)["Sequence"]) for h in receiver.to("/causes")
            if twilio_params(h)["Identity"] == "cy"]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs), seqs


# --------------------------------------------------------------------------- 3: Conversations


def test_conversations_service_webhook(client, server, api_key, receiver):
    """3. Conversations service webhook configuration: ChatServiceSid, no InstanceSid."""
    IS = client.conversations.v1.services.create(friendly_name=unique("conv")).sid
    try:
        conf = client.conversations.v1.services(IS).configuration().update(
            reachability_enabled=True)
        assert conf.reachability_enabled is True
        set_timings(server, IS, **TIMINGS)
        url = receiver.url("/conv", "a=1&b=two")
        hooks = client.conversations.v1.services(IS).configuration.webhooks().update(
            post_webhook_url=url, method="POST", filters=["onUserAdded", "onUserUpdated"])
        assert hooks.post_webhook_url == url and hooks.method == "POST"
        assert hooks.filters == ["onUserAdded", "onUserUpdated"]

        device = Device(server, mint(api_key, IS, identity="cora"))
        session = device.open()["session_id"]
        receiver.wait("/conv", 2)
        device.close(session)
        hits = receiver.wait("/conv", 3)
        user = client.conversations.v1.services(IS).users("cora").fetch()
        params = [check_twilio_request(receiver, h, url) for h in hits]
        for p in params:
            check_twilio_params(p, "conversations", IS, user, source="SDK")
        assert [p["EventType"] for p in params] == ["onUserAdded", "onUserUpdated", "onUserUpdated"]
        assert [p.get("IsOnline") for p in params[1:]] == ["true", "false"]
        assert [p.get("Reason") for p in params[1:]] == ["session_opened", "session_closed"]
    finally:
        with contextlib.suppress(Exception):
            client.conversations.v1.services(IS).delete()


def test_last_dialect_decides_the_format(client, server, chat_service, receiver):
    """3. One underlying service webhook: whichever dialect set it last decides the format."""
    IS = chat_service.sid
    users = client.chat.v2.services(IS).users
    chat_url, conv_url = receiver.url("/as-chat"), receiver.url("/as-conv")

    def added(identity, route, url):
        user = users.create(identity=identity, x_twilio_webhook_enabled="true")
        [hit] = receiver.wait(route, where=lambda h: twilio_params(h).get("Identity") == identity)
        return user, check_twilio_request(receiver, hit, url)

    client.chat.v2.services(IS).update(post_webhook_url=chat_url)
    user, p = added("u1", "/as-chat", chat_url)
    check_twilio_params(p, "chat", IS, user, source="API")

    client.conversations.v1.services(IS).configuration.webhooks().update(post_webhook_url=conv_url,
                                                                         method="POST")
    assert client.chat.v2.services(IS).fetch().post_webhook_url == conv_url
    user, p = added("u2", "/as-conv", conv_url)
    check_twilio_params(p, "conversations", IS, user, source="API")

    client.chat.v2.services(IS).update(post_webhook_url=chat_url)
    user, p = added("u3", "/as-chat", chat_url)
    check_twilio_params(p, "chat", IS, user, source="API")
    assert len(receiver.to("/as-conv")) == 1 and len(receiver.to("/as-chat")) == 2


def test_account_webhook(fresh_server, receiver):
    """3. The Conversations account webhook gets every service's user events (Conversations
    format), beside a service's own webhook."""
    server = fresh_server
    client = server.client()
    key = create_key(server)
    url = receiver.url("/account", "k=v")
    hooks = client.conversations.v1.configuration.webhooks().update(
        post_webhook_url=url, filters=["onUserAdded", "onUserUpdated"], method="POST",
        target="webhook")
    assert hooks.post_webhook_url == url and hooks.method == "POST" and hooks.target == "webhook"
    chat_is = client.chat.v2.services.create(friendly_name=unique("acct-a")).sid
    conv_is = client.conversations.v1.services.create(friendly_name=unique("acct-b")).sid
    service_url = receiver.url("/service")
    client.chat.v2.services(chat_is).update(post_webhook_url=service_url)

    a = client.chat.v2.services(chat_is).users.create(identity="ann", x_twilio_webhook_enabled="true")
    client.conversations.v1.services(conv_is).users.create(identity="ben",
                                                           x_twilio_webhook_enabled="true")
    hits = receiver.wait("/account", 2)
    by_identity = {}
    for h in hits:
        p = check_twilio_request(receiver, h, url)
        by_identity[p["Identity"]] = p
    check_twilio_params(by_identity["ann"], "conversations", chat_is, a, source="API")
    check_twilio_params(by_identity["ben"], "conversations", conv_is,
                        client.chat.v2.services(conv_is).users("ben").fetch(), source="API")
    [own] = receiver.wait("/service")
    check_twilio_params(check_twilio_request(receiver, own, service_url), "chat", chat_is, a,
                        source="API")

    # a reachability transition reaches the account webhook too
    enable_with_timings(client, server, chat_is)
    Device(server, mint(key, chat_is, identity="ann")).open()
    [hit] = receiver.wait("/account", where=lambda h: twilio_params(h).get("IsOnline") == "true")
    p = check_twilio_request(receiver, hit, url)
    check_twilio_params(p, "conversations", chat_is,
                        client.chat.v2.services(chat_is).users("ann").fetch(), source="SDK")
    assert p["EventType"] == "onUserUpdated" and p["Reason"] == "session_opened", p


# --------------------------------------------------------------------------- 4: REST header


def test_webhook_enabled_header(client, server, chat_service, receiver):
    """4. REST changes reach Twilio targets only with X-Twilio-Webhook-Enabled: true; native
    endpoints get them either way."""
    IS = chat_service.sid
    url = receiver.url("/twilio")
    client.chat.v2.services(IS).update(post_webhook_url=url)
    endpoint = create_endpoint(server, IS, receiver.url("/native"))
    users = client.chat.v2.services(IS).users

    def native_seen(kind, identity):
        return receiver.wait("/native", where=lambda h: h.json()["type"] == kind
                             and h.json()["data"]["identity"] == identity)

    users.create(identity="quiet")                                   # no header
    native_seen("user.added", "quiet")
    users.create(identity="loud-false", x_twilio_webhook_enabled="false")
    native_seen("user.added", "loud-false")
    loud = users.create(identity="loud", x_twilio_webhook_enabled="true")
    [hit] = receiver.wait("/twilio")
    native_seen("user.added", "loud")
    p = check_twilio_request(receiver, hit, url)
    check_twilio_params(p, "chat", IS, loud, source="API")
    assert p["EventType"] == "onUserAdded" and "IsOnline" not in p, p

    users("quiet").update(friendly_name="Still quiet")               # no header
    native_seen("user.updated", "quiet")
    updated = users("loud").update(friendly_name="Loud L", x_twilio_webhook_enabled="true")
    hits = receiver.wait("/twilio", 2)
    native_seen("user.updated", "loud")
    time.sleep(QUIET)
    hits = receiver.to("/twilio")
    assert [twilio_params(h)["Identity"] for h in hits] == ["loud", "loud"], \
        [describe(h) for h in hits]
    p = check_twilio_request(receiver, hits[1], url)
    check_twilio_params(p, "chat", IS, updated, source="API")
    assert p["EventType"] == "onUserUpdated" and p["FriendlyName"] == "Loud L", p

    natives = [verify_native(h, endpoint["secret"]) for h in receiver.to("/native")]
    assert [(n["type"], n["data"]["identity"], n["data"]["source"]) for n in natives] == [
        ("user.added", "quiet", "API"), ("user.added", "loud-false", "API"),
        ("user.added", "loud", "API"), ("user.updated", "quiet", "API"),
        ("user.updated", "loud", "API")]


# --------------------------------------------------------------------------- 5: filters


def test_chat_webhook_filters(client, server, chat_service, api_key, receiver):
    """5. webhook_filters: events not named are not sent."""
    IS = chat_service.sid
    url = receiver.url("/filtered")
    svc = enable_with_timings(client, server, IS, post_webhook_url=url,
                              webhook_filters=["onUserAdded"])
    assert svc.webhook_filters == ["onUserAdded"]
    create_endpoint(server, IS, receiver.url("/barrier"))  # sees every event

    device = Device(server, mint(api_key, IS, identity="fay"))
    device.close(device.open()["session_id"])
    receiver.wait("/barrier", where=lambda h: h.json()["data"]["is_online"] is False
                  and h.json()["type"] == "user.reachability_updated")
    time.sleep(QUIET)
    hits = receiver.to("/filtered")
    assert [twilio_params(h)["EventType"] for h in hits] == ["onUserAdded"], \
        [describe(h) for h in hits]

    svc = client.chat.v2.services(IS).update(webhook_filters=["onUserUpdated"])
    assert svc.webhook_filters == ["onUserUpdated"]
    client.chat.v2.services(IS).users.create(identity="gus", x_twilio_webhook_enabled="true")
    device = Device(server, mint(api_key, IS, identity="fay"))
    device.close(device.open()["session_id"])
    receiver.wait("/barrier", where=lambda h: h.json()["data"]["identity"] == "gus")
    online, offline = receiver.wait("/filtered", 3)[1:3]
    time.sleep(QUIET)
    assert len(receiver.to("/filtered")) == 3, [describe(h) for h in receiver.to("/filtered")]
    p = check_twilio_request(receiver, online, url)
    assert p["EventType"] == "onUserUpdated" and p["Identity"] == "fay", p
    assert p["IsOnline"] == "true" and p["Reason"] == "session_opened", p
    p = check_twilio_request(receiver, offline, url)
    assert p["IsOnline"] == "false" and p["Reason"] == "session_closed", p

    svc = client.chat.v2.services(IS).update(webhook_filters=["onUserAdded", "onUserUpdated"])
    client.chat.v2.services(IS).users.create(identity="hal", x_twilio_webhook_enabled="true")
    receiver.wait("/filtered", 4)
    assert twilio_params(receiver.to("/filtered")[3])["Identity"] == "hal"


def test_no_filters_sends_everything(client, server, chat_service, api_key, receiver):
    """5. A service whose filters were never set gets every user event."""
    IS = chat_service.sid
    url = receiver.url("/all")
    svc = enable_with_timings(client, server, IS, post_webhook_url=url)
    assert not svc.webhook_filters
    client.chat.v2.services(IS).users.create(identity="ida", x_twilio_webhook_enabled="true")
    Device(server, mint(api_key, IS, identity="ida")).open()
    client.chat.v2.services(IS).users("ida").update(attributes='{"x":1}',
                                                    x_twilio_webhook_enabled="true")
    hits = receiver.wait("/all", 3)
    params = [check_twilio_request(receiver, h, url) for h in hits]
    assert [(p["EventType"], p["Source"]) for p in params] == [
        ("onUserAdded", "API"), ("onUserUpdated", "SDK"), ("onUserUpdated", "API")], params
    assert json.loads(params[2]["Attributes"]) == {"x": 1}


def test_cleared_webhook_url_sends_nothing(client, server, chat_service, receiver):
    """5. An empty post_webhook_url removes the target."""
    IS = chat_service.sid
    url = receiver.url("/cleared")
    client.chat.v2.services(IS).update(post_webhook_url=url)
    create_endpoint(server, IS, receiver.url("/barrier"))
    users = client.chat.v2.services(IS).users
    users.create(identity="before", x_twilio_webhook_enabled="true")
    receiver.wait("/cleared")
    svc = client.chat.v2.services(IS).update(post_webhook_url="")
    assert svc.post_webhook_url in (None, ""), svc.post_webhook_url
    users.create(identity="after", x_twilio_webhook_enabled="true")
    receiver.wait("/barrier", where=lambda h: h.json()["data"]["identity"] == "after")
    time.sleep(QUIET)
    assert [twilio_params(h)["Identity"] for h in receiver.to("/cleared")] == ["before"]


def test_conversations_filters(client, server, chat_service, receiver):
    """5. Conversations service filters: only the named events."""
    IS = chat_service.sid
    url = receiver.url("/conv-filtered")
    client.conversations.v1.services(IS).configuration.webhooks().update(
        post_webhook_url=url, method="POST", filters=["onUserUpdated"])
    create_endpoint(server, IS, receiver.url("/barrier"))
    users = client.conversations.v1.services(IS).users
    users.create(identity="jo", x_twilio_webhook_enabled="true")
    users("jo").update(friendly_name="Jo", x_twilio_webhook_enabled="true")
    receiver.wait("/barrier", 2)
    [hit] = receiver.wait("/conv-filtered")
    time.sleep(QUIET)
    assert len(receiver.to("/conv-filtered")) == 1
    p = check_twilio_request(receiver, hit, url)
    assert p["EventType"] == "onUserUpdated" and p["FriendlyName"] == "Jo", p
    assert p["ChatServiceSid"] == IS and "InstanceSid" not in p, p


# --------------------------------------------------------------------------- 6: retries


def test_chat_retry_on_503_keeps_idempotency_token(client, chat_service, receiver):
    """6. 503 then 200 with post_webhook_retry_count=2: two attempts, one token, RetryCount
    0 then 1, the retry about 1 s later."""
    IS = chat_service.sid
    url = receiver.url("/retry")
    svc = client.chat.v2.services(IS).update(post_webhook_url=url, post_webhook_retry_count=2)
    assert svc.post_webhook_retry_count == 2
    receiver.script("/retry", 503, 200)
    user = client.chat.v2.services(IS).users.create(identity="kim", x_twilio_webhook_enabled="true")
    first, second = receiver.wait("/retry", 2)
    time.sleep(2.5)  # a third attempt would come ~2 s after the second
    assert len(receiver.to("/retry")) == 2
    p0, p1 = (check_twilio_request(receiver, h, url) for h in (first, second))
    for p in (p0, p1):
        check_twilio_params(p, "chat", IS, user, source="API")
    assert (p0["RetryCount"], p1["RetryCount"]) == ("0", "1")
    assert {k: v for k, v in p0.items() if k != "RetryCount"} == \
           {k: v for k, v in p1.items() if k != "RetryCount"}
    assert first.headers["i-twilio-idempotency-token"] == second.headers["i-twilio-idempotency-token"]
    gap = second.at - first.at
    assert 0.7 <= gap <= 3.0, f"first retry after {gap:.2f} s (expected ~1 s)"


def test_chat_retries_exhausted_then_order_kept(client, chat_service, receiver):
    """6. 503, 429, 504: retried up to the count (delays ~1 s, ~2 s), then given up; the next
    event of the same user is sent after that."""
    IS = chat_service.sid
    url = receiver.url("/exhaust")
    client.chat.v2.services(IS).update(post_webhook_url=url, post_webhook_retry_count=2)
    receiver.script("/exhaust", 503, 429, 504)
    users = client.chat.v2.services(IS).users
    users.create(identity="lee", x_twilio_webhook_enabled="true")
    users("lee").update(friendly_name="Lee", x_twilio_webhook_enabled="true")
    hits = receiver.wait("/exhaust", 4)
    time.sleep(QUIET)
    hits = receiver.to("/exhaust")
    params = [check_twilio_request(receiver, h, url) for h in hits]
    assert [(p["EventType"], p["RetryCount"]) for p in params] == [
        ("onUserAdded", "0"), ("onUserAdded", "1"), ("onUserAdded", "2"),
        ("onUserUpdated", "0")], params
    assert len({h.headers["i-twilio-idempotency-token"] for h in hits[:3]}) == 1
    assert hits[3].headers["i-twilio-idempotency-token"] != hits[0].headers["i-twilio-idempotency-token"]
    gaps = [b.at - a.at for a, b in zip(hits, hits[1:3])]
    assert 0.7 <= gaps[0] <= 3.0 and 1.5 <= gaps[1] <= 5.0, gaps


RETRIES_METRIC = re.compile(r'^reachd_webhook_attempts_total\{outcome="retry"\} (\S+)$', re.M)


def retried_attempts(server) -> float:
    """reachd's count of attempts that were followed by a retry (from `/metrics`)."""
    resp = requests.get(f"{server.base}/metrics", timeout=30)
    assert resp.status_code == 200, resp.text
    found = RETRIES_METRIC.search(resp.text)
    return float(found.group(1)) if found else 0.0


def test_chat_retry_after_connection_failure(client, server, chat_service):
    """6. A refused connection is retried (~1 s later) with RetryCount=1."""
    IS = chat_service.sid
    probe = Receiver()  # take a free port, then free it: nothing listens there for a while
    port = probe.httpd.server_address[1]
    probe.close()
    url = f"http://127.0.0.1:{port}/late"
    client.chat.v2.services(IS).update(post_webhook_url=url, post_webhook_retry_count=2)
    retried = retried_attempts(server)
    client.chat.v2.services(IS).users.create(identity="lou", x_twilio_webhook_enabled="true")
    # listen only once the first attempt was refused and its retry scheduled (~1 s ahead)
    deadline = time.monotonic() + WAIT
    while retried_attempts(server) <= retried:
        assert time.monotonic() < deadline, "the refused first attempt was not seen failing"
        time.sleep(0.02)
    bind_deadline = time.monotonic() + 0.5
    while True:
        try:
            late = Receiver(port)
            break
        except OSError as e:  # the freed port may linger briefly
            if e.errno != errno.EADDRINUSE or time.monotonic() > bind_deadline:
                raise
            time.sleep(0.02)
    try:
        [hit] = late.wait("/late")
        p = check_twilio_request(late, hit, url)
        assert p["RetryCount"] == "1" and p["Identity"] == "lou", p
        time.sleep(QUIET)
        assert len(late.to("/late")) == 1
    finally:
        late.close()


@pytest.mark.parametrize("status", [500, 400, 404])
def test_chat_no_retry_on_other_status(client, chat_service, receiver, status):
    """6. Statuses other than 429/503/504 end the delivery after one attempt."""
    IS = chat_service.sid
    url = receiver.url("/once")
    client.chat.v2.services(IS).update(post_webhook_url=url, post_webhook_retry_count=3)
    receiver.script("/once", status)
    client.chat.v2.services(IS).users.create(identity="mo", x_twilio_webhook_enabled="true")
    receiver.wait("/once")
    time.sleep(2.5)  # the first retry would come after ~1 s
    assert len(receiver.to("/once")) == 1, [describe(h) for h in receiver.to("/once")]


def test_chat_default_retry_count_is_zero(client, chat_service, receiver):
    """6. post_webhook_retry_count defaults to 0: a 503 is not retried."""
    IS = chat_service.sid
    url = receiver.url("/zero")
    svc = client.chat.v2.services(IS).update(post_webhook_url=url)
    assert svc.post_webhook_retry_count in (0, None)
    receiver.script("/zero", 503)
    client.chat.v2.services(IS).users.create(identity="ned", x_twilio_webhook_enabled="true")
    receiver.wait("/zero")
    time.sleep(2.5)
    assert len(receiver.to("/zero")) == 1


def test_chat_retry_after_timeout(client, chat_service, receiver):
    """6. No answer within 5 s is a timeout, retried with the same token."""
    IS = chat_service.sid
    url = receiver.url("/slow")
    client.chat.v2.services(IS).update(post_webhook_url=url, post_webhook_retry_count=1)
    receiver.script("/slow", Reply(200, delay=7))
    client.chat.v2.services(IS).users.create(identity="oz", x_twilio_webhook_enabled="true")
    first, second = receiver.wait("/slow", 2, timeout=15)
    gap = second.at - first.at
    assert 5.5 <= gap <= 9.0, f"retry {gap:.2f} s after the first attempt (timeout 5 s + ~1 s)"
    p0, p1 = (check_twilio_request(receiver, h, url) for h in (first, second))
    assert (p0["RetryCount"], p1["RetryCount"]) == ("0", "1")
    assert first.headers["i-twilio-idempotency-token"] == second.headers["i-twilio-idempotency-token"]


def test_conversations_target_retries_once(client, chat_service, receiver):
    """6. Conversations targets retry once."""
    IS = chat_service.sid
    url = receiver.url("/conv-retry")
    client.conversations.v1.services(IS).configuration.webhooks().update(post_webhook_url=url,
                                                                         method="POST")
    receiver.script("/conv-retry", 503, 503, 503)
    client.conversations.v1.services(IS).users.create(identity="pia", x_twilio_webhook_enabled="true")
    receiver.wait("/conv-retry", 2)
    time.sleep(3.0)
    hits = receiver.to("/conv-retry")
    assert len(hits) == 2, [describe(h) for h in hits]
    params = [check_twilio_request(receiver, h, url) for h in hits]
    assert [p["RetryCount"] for p in params] == ["0", "1"]
    assert params[0]["ChatServiceSid"] == IS
    assert hits[0].headers["i-twilio-idempotency-token"] == hits[1].headers["i-twilio-idempotency-token"]


# --------------------------------------------------------------------------- 7: native endpoints


def test_native_endpoint_delivery_and_log(client, server, chat_service, api_key, receiver):
    """7. Native endpoints: Standard Webhooks signature, JSON shape, event_types filter,
    every event type (REST without the header too), delivery log, resend, delete."""
    IS = chat_service.sid
    enable_with_timings(client, server, IS)
    every = create_endpoint(server, IS, receiver.url("/every"), description="all events")
    assert every["event_types"] in (None, []), every
    only_added = create_endpoint(server, IS, receiver.url("/added"), event_types=["user.added"])
    assert only_added["event_types"] == ["user.added"], only_added
    fetched = get_endpoint(server, IS, every["id"])
    assert "secret" not in fetched and fetched["description"] == "all events", fetched
    listed = requests.get(native_url(server, f"/services/{IS}/webhooks"), auth=BASIC, timeout=30)
    assert listed.status_code == 200, listed.text
    listed_ids = {e["id"] for e in listed.json()["endpoints"]}
    assert listed_ids == {every["id"], only_added["id"]}, listed.text
    assert all("secret" not in e for e in listed.json()["endpoints"])

    device = Device(server, mint(api_key, IS, identity="rae"))
    session = device.open()["session_id"]
    added, online = receiver.wait("/every", 2)[:2]
    user = client.chat.v2.services(IS).users("rae").fetch()
    a = verify_native(added, every["secret"])
    assert a["type"] == "user.added" and a["data"]["identity"] == "rae", a
    assert a["data"]["user_sid"] == user.sid and a["data"]["service_sid"] == IS, a
    assert a["data"]["source"] == "SDK", a
    on = verify_native(online, every["secret"])
    assert on["type"] == "user.reachability_updated", on
    d = on["data"]
    assert d["is_online"] is True and d["reason"] == "session_opened", d
    assert d["update_reasons"] == ["reachabilityOnline"] and d["session_count"] == 1, d
    assert d["source"] == "SDK" and d["sequence"] > a["data"]["sequence"], (a, on)
    assert added.headers["webhook-id"] != online.headers["webhook-id"]

    client.chat.v2.services(IS).users("rae").update(friendly_name="Rae")  # no header
    upd = verify_native(receiver.wait("/every", 3)[2], every["secret"])
    assert upd["type"] == "user.updated" and upd["data"]["source"] == "API", upd
    device.close(session)
    off = verify_native(receiver.wait("/every", 4)[3], every["secret"])
    assert off["type"] == "user.reachability_updated", off
    assert off["data"]["is_online"] is False and off["data"]["reason"] == "session_closed", off
    assert off["data"]["session_count"] == 0 and off["data"]["last_seen"], off
    client.chat.v2.services(IS).users("rae").delete()
    gone = verify_native(receiver.wait("/every", 5)[4], every["secret"])
    assert gone["type"] == "user.deleted" and gone["data"]["identity"] == "rae", gone

    [only] = receiver.wait("/added")
    time.sleep(QUIET)
    assert len(receiver.to("/added")) == 1 and len(receiver.to("/every")) == 5
    assert verify_native(only, only_added["secret"])["type"] == "user.added"
    with pytest.raises(WebhookVerificationError):  # each endpoint has its own secret
        Webhook(only_added["secret"]).verify(added.body, added.headers)

    # the delivery log: five delivered, one attempt each, with status and latency
    log = deliveries(server, IS, every["id"])
    assert len(log) == 5 and all(x["status"] == "delivered" for x in log), log
    for x in log:
        assert x["attempts"] == 1 and x["idempotency_token"], x
        [attempt] = x["attempt_log"]
        assert attempt["attempt"] == 1 and attempt["status"] == 200, attempt
        assert isinstance(attempt["latency_ms"], int) and attempt["latency_ms"] >= 0, attempt
        assert RFC3339_UTC.match(attempt["at"]) and attempt["error"] is None, attempt
    assert len(deliveries(server, IS, every["id"], status="delivered")) == 5
    paged, before = [], None
    for _ in range(10):
        params = {"limit": 2, **({"before": before} if before is not None else {})}
        resp = requests.get(native_url(server, f"/services/{IS}/webhooks/{every['id']}/deliveries"),
                            params=params, auth=BASIC, timeout=30)
        assert resp.status_code == 200, resp.text
        assert len(resp.json()["deliveries"]) <= 2
        paged += resp.json()["deliveries"]
        before = resp.json()["next_before"]
        if before is None:
            break
    assert [x["id"] for x in paged] == [x["id"] for x in log], (paged, log)
    assert deliveries(server, IS, every["id"], status="failed") == []
    assert deliveries(server, IS, every["id"], status="pending") == []

    # resend one delivery: the receiver gets the same event again
    sent = [verify_native(h, every["secret"]) for h in receiver.to("/every")]
    oldest = min(log, key=lambda x: (x["created"], x["id"]))
    resp = requests.post(native_url(server, f"/deliveries/{oldest['id']}/resend"), auth=BASIC,
                         timeout=30)
    assert resp.status_code == 202, resp.text
    again = verify_native(receiver.wait("/every", 6)[5], every["secret"])
    assert again == a and again in sent, (again, a)
    assert len(deliveries(server, IS, every["id"])) == 6
    resp = requests.post(native_url(server, "/deliveries/999999999/resend"), auth=BASIC,
                         timeout=30)
    assert resp.status_code == 404, resp.text

    # update, then delete: a deleted endpoint gets nothing more
    resp = requests.post(native_url(server, f"/services/{IS}/webhooks/{only_added['id']}"),
                         json={"event_types": ["user.added", "user.deleted"]}, auth=BASIC,
                         timeout=30)
    assert resp.status_code == 200 and resp.json()["event_types"] == ["user.added", "user.deleted"], resp.text
    resp = requests.delete(native_url(server, f"/services/{IS}/webhooks/{every['id']}"),
                           auth=BASIC, timeout=30)
    assert resp.status_code == 204 and resp.text == "", resp.text
    resp = requests.get(native_url(server, f"/services/{IS}/webhooks/{every['id']}"), auth=BASIC,
                        timeout=30)
    assert resp.status_code == 404, resp.text
    assert set(resp.json()) == {"code", "message", "more_info", "status"}, resp.text
    client.chat.v2.services(IS).users.create(identity="sam")
    receiver.wait("/added", 2)
    time.sleep(QUIET)
    assert len(receiver.to("/every")) == 6


def test_native_410_disables_then_recover(client, server, chat_service, receiver):
    """7. A 410 answer disables the endpoint (later events are not sent to it); after it is
    re-enabled, recover?since= resends the failed deliveries."""
    IS = chat_service.sid
    before = datetime.now(timezone.utc) - timedelta(seconds=2)
    gone = create_endpoint(server, IS, receiver.url("/gone"))
    create_endpoint(server, IS, receiver.url("/barrier"))
    receiver.script("/gone", Reply(410, body="gone for good"))
    users = client.chat.v2.services(IS).users
    users.create(identity="tia")
    [first] = receiver.wait("/gone")
    assert verify_native(first, gone["secret"])["data"]["identity"] == "tia"
    deadline = time.monotonic() + 5
    while not (state := get_endpoint(server, IS, gone["id"]))["disabled"]:
        assert time.monotonic() < deadline, state
        time.sleep(0.1)
    assert state["disabled_reason"], state

    [failed] = deliveries(server, IS, gone["id"], status="failed")
    assert failed["attempts"] == 1, failed
    [attempt] = failed["attempt_log"]
    # The receiver is on loopback: reachd keeps no response body from a private address
    # unless webhooks.store_private_responses is on (the Rust suite covers both settings).
    assert attempt["status"] == 410 and attempt["response"] is None, attempt

    users.create(identity="uma")                 # the endpoint is disabled: not sent
    receiver.wait("/barrier", where=lambda h: h.json()["data"]["identity"] == "uma")
    time.sleep(QUIET)
    assert len(receiver.to("/gone")) == 1

    # recovering from after the failure resends nothing
    now = datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")
    resp = requests.post(native_url(server, f"/services/{IS}/webhooks/{gone['id']}/recover"),
                         params={"since": now}, auth=BASIC, timeout=30)
    assert resp.status_code == 202 and resp.json() == {"resent": 0}, resp.text

    resp = requests.post(native_url(server, f"/services/{IS}/webhooks/{gone['id']}"),
                         json={"disabled": False}, auth=BASIC, timeout=30)
    assert resp.status_code == 200 and resp.json()["disabled"] is False, resp.text
    since = before.isoformat().replace("+00:00", "Z")
    resp = requests.post(native_url(server, f"/services/{IS}/webhooks/{gone['id']}/recover"),
                         params={"since": since}, auth=BASIC, timeout=30)
    assert resp.status_code == 202, resp.text
    resent = resp.json()["resent"]
    assert resent >= 1, resp.text
    hits = receiver.wait("/gone", 1 + resent)
    identities = [verify_native(h, gone["secret"])["data"]["identity"] for h in hits[1:]]
    assert "tia" in identities, identities
    users.create(identity="vic")                 # enabled again: new events flow
    receiver.wait("/gone", where=lambda h: h.json()["data"]["identity"] == "vic")
    resp = requests.post(native_url(server, f"/services/{IS}/webhooks/{gone['id']}/recover"),
                         params={"since": "yesterday"}, auth=BASIC, timeout=30)
    assert resp.status_code == 400, resp.text


def test_native_retries_and_failure(server_factory, receiver):
    """7. Native retries follow the schedule (here 1 s, 1 s): same webhook-id on every
    attempt, each logged; exhausted → failed, and recover resends it."""
    server = server_factory(REACHD_WEBHOOKS__RETRY_SCHEDULE_SECS="[1, 1]")
    client = server.client()
    IS = client.chat.v2.services.create(friendly_name=unique("retry")).sid
    flaky = create_endpoint(server, IS, receiver.url("/flaky"))
    down = create_endpoint(server, IS, receiver.url("/down"))
    receiver.script("/flaky", 500, 503)
    receiver.script("/down", 500, 502, 500)
    started = datetime.now(timezone.utc) - timedelta(seconds=2)
    client.chat.v2.services(IS).users.create(identity="wes")

    hits = receiver.wait("/flaky", 3)
    assert len({h.headers["webhook-id"] for h in hits}) == 1, [h.headers for h in hits]
    payloads = [verify_native(h, flaky["secret"]) for h in hits]
    assert all(p == payloads[0] for p in payloads)
    gaps = [b.at - a.at for a, b in zip(hits, hits[1:])]
    assert all(0.6 <= g <= 2.5 for g in gaps), gaps
    down_hits = receiver.wait("/down", 3)

    def settled(wh, status):
        deadline = time.monotonic() + 5
        while not (rows := deliveries(server, IS, wh, status=status)):
            assert time.monotonic() < deadline, deliveries(server, IS, wh)
            time.sleep(0.1)
        return rows

    [ok] = settled(flaky["id"], "delivered")
    assert ok["attempts"] == 3, ok
    assert [a["status"] for a in ok["attempt_log"]] == [500, 503, 200], ok
    assert [a["attempt"] for a in ok["attempt_log"]] == [1, 2, 3], ok
    [bad] = settled(down["id"], "failed")
    assert bad["attempts"] == 3 and bad["last_status"] == 500, bad
    assert [a["status"] for a in bad["attempt_log"]] == [500, 502, 500], bad
    time.sleep(QUIET)
    assert len(receiver.to("/down")) == 3
    assert get_endpoint(server, IS, down["id"])["disabled"] is False  # only 410 disables

    resp = requests.post(native_url(server, f"/services/{IS}/webhooks/{down['id']}/recover"),
                         params={"since": started.isoformat().replace("+00:00", "Z")},
                         auth=BASIC, timeout=30)
    assert resp.status_code == 202 and resp.json() == {"resent": 1}, resp.text
    fourth = receiver.wait("/down", 4)[3]
    assert verify_native(fourth, down["secret"]) == verify_native(down_hits[0], down["secret"])
    time.sleep(QUIET)
    assert len(receiver.to("/flaky")) == 3  # recover is per endpoint


def test_native_endpoint_validation(server, chat_service):
    """7. Bad endpoint input → 400 with the four-key error body; unknown ids → 404."""
    IS = chat_service.sid
    base = native_url(server, f"/services/{IS}/webhooks")
    for body in ({}, {"url": "not a url"}, {"url": "ftp://example.com/x"},
                 {"url": "http://127.0.0.1:9/x", "event_types": ["user.exploded"]}):
        resp = requests.post(base, json=body, auth=BASIC, timeout=30)
        assert resp.status_code == 400, (body, resp.status_code, resp.text)
        assert set(resp.json()) == {"code", "message", "more_info", "status"}, resp.text
    resp = requests.get(f"{base}/WH{'0' * 32}", auth=BASIC, timeout=30)
    assert resp.status_code == 404, resp.text
    resp = requests.get(f"{base}/WH{'0' * 32}/deliveries", auth=BASIC, timeout=30)
    assert resp.status_code == 404, resp.text
    resp = requests.post(base, json={"url": "http://127.0.0.1:9/x"}, timeout=30)  # no auth
    assert resp.status_code == 401, resp.text


# --------------------------------------------------------------------------- 8: event feed


def read_feed(server, IS: str, limit: int, after: str | None = None) -> tuple[list[dict], int]:
    events, pages = [], 0
    while True:
        params = {"limit": limit}
        if after is not None:
            params["after"] = after
        resp = requests.get(native_url(server, f"/services/{IS}/events"), params=params,
                            auth=BASIC, timeout=30)
        assert resp.status_code == 200, resp.text
        page = resp.json()
        assert set(page) == {"events", "next_cursor", "has_more"}, page
        assert len(page["events"]) <= limit
        pages += 1
        events += page["events"]
        after = page["next_cursor"]
        if not page["has_more"]:
            return events, pages
        assert pages < 100


def test_event_feed_pages(client, server, chat_service, api_key):
    """8. The feed pages with after/limit: every event once, in order, this service only."""
    IS = chat_service.sid
    enable_with_timings(client, server, IS)
    other = client.chat.v2.services.create(friendly_name=unique("other"))
    try:
        for name in ("fa", "fb", "fc", "fd", "fe"):
            client.chat.v2.services(IS).users.create(identity=name)
        client.chat.v2.services(other.sid).users.create(identity="elsewhere")
        Device(server, mint(api_key, IS, identity="fa")).open()
        deadline = time.monotonic() + 5
        while len(read_feed(server, IS, 1000)[0]) < 6:
            assert time.monotonic() < deadline
            time.sleep(0.1)

        everything, pages = read_feed(server, IS, 1000)
        assert pages == 1
        assert [(e["type"], e["data"]["identity"]) for e in everything] == [
            ("user.added", n) for n in ("fa", "fb", "fc", "fd", "fe")] + [
            ("user.reachability_updated", "fa")]
        for e in everything:
            assert set(e) == {"id", "type", "timestamp", "data"}, e
            check_native_shape({k: v for k, v in e.items() if k != "id"})
            assert e["data"]["service_sid"] == IS
        assert len({e["id"] for e in everything}) == len(everything)

        paged, pages = read_feed(server, IS, 2)
        assert paged == everything and pages >= 3
        tail, _ = read_feed(server, IS, 2, after=everything[2]["id"])
        assert tail == everything[3:]
        resp = requests.get(native_url(server, f"/services/{IS}/events"),
                            params={"after": everything[-1]["id"]}, auth=BASIC, timeout=30)
        assert resp.status_code == 200, resp.text
        assert resp.json()["events"] == [] and resp.json()["has_more"] is False, resp.text
        for params in ({"limit": 0}, {"limit": 1001}, {"after": "not-a-cursor"}):
            resp = requests.get(native_url(server, f"/services/{IS}/events"), params=params,
                                auth=BASIC, timeout=30)
            assert resp.status_code == 400, (params, resp.text)
            assert set(resp.json()) == {"code", "message", "more_info", "status"}, resp.text
    finally:
        with contextlib.suppress(Exception):
            client.chat.v2.services(other.sid).delete()


class SSE:
    """A text/event-stream reader over `requests` (frames: dicts of id/event/data)."""

    def __init__(self, server, IS: str, last_event_id: str | None = None):
        headers = {"Accept": "text/event-stream"}
        if last_event_id is not None:
            headers["Last-Event-ID"] = last_event_id
        self.resp = requests.get(native_url(server, f"/services/{IS}/events"), headers=headers,
                                 auth=BASIC, stream=True, timeout=(5, 20))
        assert self.resp.status_code == 200, self.resp.text
        assert self.resp.headers["Content-Type"].startswith("text/event-stream"), self.resp.headers
        self.lines = self.resp.iter_lines(chunk_size=1, decode_unicode=True)

    def frames(self, n: int) -> list[dict]:
        out, current = [], {}
        while len(out) < n:
            line = next(self.lines)
            if line == "":
                if current:
                    out.append(current)
                    current = {}
            elif line.startswith(":"):
                continue
            else:
                name, _, value = line.partition(":")
                value = value[1:] if value.startswith(" ") else value
                current[name] = current[name] + "\n" + value if name in current else value
        return out

    def close(self):
        self.resp.close()


def test_event_feed_stream_resume(client, server, chat_service):
    """8. SSE: history then live frames; reconnecting with Last-Event-ID while events keep
    happening misses and duplicates nothing."""
    IS = chat_service.sid
    users = client.chat.v2.services(IS).users
    for name in ("s1", "s2", "s3"):
        users.create(identity=name)

    stream = SSE(server, IS)
    first = stream.frames(3)
    users.create(identity="s4")  # live, while connected
    first += stream.frames(1)
    stream.close()
    assert [json.loads(f["data"])["data"]["identity"] for f in first] == ["s1", "s2", "s3", "s4"]

    # events keep coming from another thread while the reader reconnects every two frames
    def produce():
        for i in range(5, 13):
            users.create(identity=f"s{i}")
            time.sleep(0.15)

    producer = threading.Thread(target=produce)
    producer.start()
    seen = list(first)
    try:
        while len(seen) < 12:
            stream = SSE(server, IS, last_event_id=seen[-1]["id"])
            seen += stream.frames(min(2, 12 - len(seen)))
            stream.close()
            time.sleep(0.2)
    finally:
        producer.join()

    feed, _ = read_feed(server, IS, 1000)
    assert [f["id"] for f in seen] == [e["id"] for e in feed], (
        [f["id"] for f in seen], [e["id"] for e in feed])
    for frame, event in zip(seen, feed):
        assert frame["event"] == event["type"]
        assert json.loads(frame["data"]) == event
    assert [e["data"]["identity"] for e in feed] == [f"s{i}" for i in range(1, 13)]
