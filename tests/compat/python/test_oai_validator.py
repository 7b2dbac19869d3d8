"""Self-check: the response validator really rejects what it must (and honours nullable)."""

import json

import oai

BASE = "http://127.0.0.1:1"
USER = {
    "sid": "US" + "a" * 32, "account_sid": "AC" + "a" * 32, "service_sid": "IS" + "a" * 32,
    "attributes": "{}", "friendly_name": None, "role_sid": "RL" + "a" * 32,
    "identity": "alice", "is_online": None, "is_notifiable": None,
    "date_created": "2015-07-30T20:00:00Z", "date_updated": "2015-07-30T20:00:00Z",
    "joined_channels_count": 0,
    "links": {"user_channels": f"{BASE}/chat/v2/Services/IS{'a' * 32}/Users/US{'a' * 32}/Channels"},
    "url": f"{BASE}/chat/v2/Services/IS{'a' * 32}/Users/US{'a' * 32}",
}
URL = f"{BASE}/chat/v2/Services/IS{'a' * 32}/Users/alice"


def check(body, status=200, method="GET", url=URL):
    return oai.validate_exchange(method, url, status, json.dumps(body) if body is not None else "", BASE)


def test_valid_body_passes_with_nulls():
    assert check(USER) == []


def test_wrong_type_fails():
    assert check(dict(USER, is_online="yes"))
    assert check(dict(USER, joined_channels_count="0"))
    assert check(dict(USER, sid="US123"))


def test_twilio_date_format_enforced():
    assert check(dict(USER, date_created="2015-07-30T20:00:00.000Z"))


def test_urls_must_be_on_server_base():
    assert check(dict(USER, url="https://chat.twilio.com/v2/Services/x"))


def test_undocumented_status_fails():
    assert check(USER, status=200, method="POST", url=f"{BASE}/chat/v2/Services/IS{'a' * 32}/Users")
    assert check(None, status=200, method="DELETE")
    assert check(None, status=204, method="DELETE") == []


def test_list_needs_meta_key():
    meta = {"page": 0, "page_size": 50, "first_page_url": URL, "url": URL,
            "next_page_url": None, "previous_page_url": None}
    url = f"{BASE}/chat/v2/Services/IS{'a' * 32}/Users"
    assert check({"users": [USER], "meta": dict(meta, key="users")}, url=url) == []
    assert check({"users": [USER], "meta": meta}, url=url)


def test_error_body_shape():
    assert check({"code": 20404, "message": "x", "more_info": "y", "status": 404}, 404) == []
    assert check({"message": "x"}, 404)
    assert check({"code": 20404, "message": "x", "more_info": "y", "status": 404,
                  "type": "t", "title": "t"}, 404)


def test_nullable_enum_and_conversations_mapping():
    url = f"{BASE}/conversations/v1/Services/IS{'a' * 32}/Configuration/Webhooks"
    body = {"account_sid": "AC" + "a" * 32, "chat_service_sid": "IS" + "a" * 32,
            "pre_webhook_url": None, "post_webhook_url": None, "filters": None,
            "method": None, "url": url}
    assert check(body, url=url) == []
    assert check(dict(body, method="PUT"), url=url)
