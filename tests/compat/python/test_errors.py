"""Error statuses and codes as twilio-python surfaces them (docs/twilio-compatibility.md §5)."""

import json

import pytest
from twilio.base.exceptions import TwilioException, TwilioRestException

from conftest import ACCOUNT_SID, RECORDER

UNKNOWN_IS = "IS" + "0" * 32


@pytest.mark.parametrize("call", [
    lambda c: c.chat.v2.services(UNKNOWN_IS).fetch(),
    lambda c: c.chat.v1.services(UNKNOWN_IS).fetch(),
    lambda c: c.conversations.v1.services(UNKNOWN_IS).fetch(),
    lambda c: c.conversations.v1.services(UNKNOWN_IS).configuration().fetch(),
    lambda c: c.chat.v2.services(UNKNOWN_IS).users.list(),
    lambda c: c.chat.v2.services(UNKNOWN_IS).users.create(identity="x"),
    lambda c: c.chat.v2.services("ISnot-a-sid").fetch(),
    lambda c: c.chat.v2.credentials("CR" + "0" * 32).fetch(),
], ids=["chat-v2", "chat-v1", "conv", "conv-config", "v2-users-list", "v2-users-create",
        "malformed-sid", "credential"])
def test_unknown_resource_is_404_20404(client, call):
    assert_error(lambda: call(client), 404, 20404)


def assert_error(call, status, code):
    """twilio-python raises TwilioRestException for fetch/create/update/delete, but a plain
    TwilioException("Unable to fetch page") for a list page that is not HTTP 200."""
    with pytest.raises(TwilioException) as err:
        call()
    if isinstance(err.value, TwilioRestException):
        assert (err.value.status, err.value.code) == (status, code)
        assert err.value.msg
    else:
        last = RECORDER.exchanges[-1]
        assert (last.status, json.loads(last.text)["code"]) == (status, code)


def test_wrong_password_is_401_20003(server):
    bad = server.client(auth_token="wrong-token")
    assert_error(lambda: bad.chat.v2.services.list(), 401, 20003)
    assert_error(lambda: bad.chat.v2.services(UNKNOWN_IS).fetch(), 401, 20003)
    assert_error(lambda: bad.conversations.v1.services.create(friendly_name="nope"), 401, 20003)


def test_invalid_boolean_is_400_20001(server, chat_service):
    for path in (f"/chat/v2/Services/{chat_service.sid}",
                 f"/chat/v1/Services/{chat_service.sid}",
                 f"/conversations/v1/Services/{chat_service.sid}/Configuration"):
        resp = server.raw("POST", path, data={"ReachabilityEnabled": "maybe"})
        assert resp.status_code == 400, (path, resp.text)
        body = resp.json()
        assert (body["status"], body["code"]) == (400, 20001), body
        assert "ReachabilityEnabled" in body["message"]
    resp = server.raw("GET", f"/chat/v2/Services/{chat_service.sid}")
    assert resp.json()["reachability_enabled"] is False  # nothing was changed


def test_booleans_parse_case_insensitively(server, chat_service):
    resp = server.raw("POST", f"/chat/v2/Services/{chat_service.sid}",
                      data={"ReachabilityEnabled": "True"})
    assert resp.status_code == 200 and resp.json()["reachability_enabled"] is True


def test_missing_required_parameter_is_400_20001(client, server, chat_service):
    for path in ("/chat/v2/Services", "/conversations/v1/Services",
                 f"/chat/v2/Services/{chat_service.sid}/Users"):
        resp = server.raw("POST", path, data={})
        assert resp.status_code == 400, (path, resp.text)
        assert resp.json()["code"] == 20001


def test_error_body_is_legacy_four_keys(server):
    resp = server.raw("GET", f"/chat/v2/Services/{UNKNOWN_IS}")
    body = resp.json()
    assert resp.status_code == 404
    assert set(body) == {"code", "message", "more_info", "status"}
    assert body["more_info"] == "https://www.twilio.com/docs/errors/20404"
    resp = server.raw("GET", "/chat/v2/Services", auth=(ACCOUNT_SID, "nope"))
    assert (resp.status_code, resp.json()["code"]) == (401, 20003)
