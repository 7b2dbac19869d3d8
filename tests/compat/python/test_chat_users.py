"""Chat v2 and v1 users, including identities with reserved characters and paging."""

import json
import secrets

import pytest
from twilio.base.exceptions import TwilioRestException

from conftest import ACCOUNT_SID, RECORDER
from test_chat_services import SID

ROLE = "RL" + secrets.token_hex(16)


def test_chat_v2_user_crud(client, server, chat_service):
    users = client.chat.v2.services(chat_service.sid).users
    alice = users.create(identity="alice@example.com", friendly_name="Alice",
                         attributes='{"a":1}', role_sid=ROLE, x_twilio_webhook_enabled="true")
    assert RECORDER.exchanges[-1].status == 201
    assert SID["US"].match(alice.sid)
    assert alice.identity == "alice@example.com"
    assert alice.friendly_name == "Alice"
    assert json.loads(alice.attributes) == {"a": 1}
    assert alice.role_sid == ROLE
    assert alice.account_sid == ACCOUNT_SID
    assert alice.service_sid == chat_service.sid
    assert alice.joined_channels_count == 0
    user_url = f"{server.chat}/v2/Services/{chat_service.sid}/Users/{alice.sid}"
    assert alice.url == user_url
    assert alice.links == {"user_channels": f"{user_url}/Channels",
                           "user_bindings": f"{user_url}/Bindings"}

    by_sid = users(alice.sid).fetch()
    by_identity = users("alice@example.com").fetch()
    for u in (by_sid, by_identity):
        assert (u.sid, u.identity, u.friendly_name) == (alice.sid, "alice@example.com", "Alice")
        assert u.url == user_url  # url uses the SID even when fetched by identity (§2.2)
        assert u.is_online is None and u.is_notifiable is None  # reachability disabled

    bob = users.create(identity="bob smith+1")
    assert bob.identity == "bob smith+1"
    assert bob.attributes == "{}"
    assert bob.friendly_name is None
    assert bob.role_sid == chat_service.default_service_role_sid
    fetched = users("bob smith+1").fetch()
    assert (fetched.sid, fetched.identity) == (bob.sid, "bob smith+1")
    with pytest.raises(TwilioRestException) as err:
        users("bob smith 1").fetch()  # '+' in a path is literal, not a space (§1.3)
    assert (err.value.status, err.value.code) == (404, 20404)

    updated = users(alice.sid).update(attributes='{"b":2}', friendly_name="Alice B",
                                      x_twilio_webhook_enabled="false")
    assert json.loads(updated.attributes) == {"b": 2}
    assert updated.friendly_name == "Alice B"
    assert updated.identity == "alice@example.com"
    assert updated.role_sid == ROLE
    by_identity = users("alice@example.com").update(friendly_name="Alice C")
    assert by_identity.sid == alice.sid and by_identity.friendly_name == "Alice C"
    assert json.loads(users(alice.sid).fetch().attributes) == {"b": 2}

    assert users("bob smith+1").delete() is True
    assert RECORDER.exchanges[-1].status == 204
    assert users(alice.sid).delete() is True
    for gone in (alice.sid, "alice@example.com", bob.sid):
        with pytest.raises(TwilioRestException) as err:
            users(gone).fetch()
        assert (err.value.status, err.value.code) == (404, 20404)
    assert users.list() == []


def test_chat_v2_duplicate_identity_is_409_50201(client, chat_service):
    users = client.chat.v2.services(chat_service.sid).users
    users.create(identity="dup")
    with pytest.raises(TwilioRestException) as err:
        users.create(identity="dup")
    assert (err.value.status, err.value.code) == (409, 50201)
    assert len(users.list()) == 1


def test_chat_v2_users_paging(client, chat_service):
    users = client.chat.v2.services(chat_service.sid).users
    identities = {f"pager-{i:03d}" for i in range(120)}
    for identity in sorted(identities):
        users.create(identity=identity)

    path = f"/chat/v2/Services/{chat_service.sid}/Users"
    before = len(RECORDER.requests_to("GET", path))
    listed = users.list(page_size=50)
    gets = RECORDER.requests_to("GET", path)[before:]
    assert len(listed) == 120
    assert len({u.sid for u in listed}) == 120
    assert {u.identity for u in listed} == identities
    assert len(gets) == 3, [g.url for g in gets]
    assert "PageSize=50" in gets[0].url
    for user in listed:  # read responses never carry reachability (§5)
        assert user.is_online is None and user.is_notifiable is None

    before = len(RECORDER.requests_to("GET", path))
    streamed = [u.identity for u in users.stream(page_size=50)]
    assert len(streamed) == 120 and set(streamed) == identities
    assert len(RECORDER.requests_to("GET", path)) - before == 3

    before = len(RECORDER.requests_to("GET", path))
    one = users.list(limit=1)
    gets = RECORDER.requests_to("GET", path)[before:]
    assert len(one) == 1 and one[0].identity in identities
    assert len(gets) == 1 and "PageSize=1" in gets[0].url


def test_chat_v1_user_crud(client, server, chat_service):
    users = client.chat.v1.services(chat_service.sid).users
    carol = users.create(identity="carol", friendly_name="Carol", attributes='{"c":3}',
                         role_sid=ROLE)
    assert RECORDER.exchanges[-1].status == 201
    assert SID["US"].match(carol.sid)
    assert (carol.identity, carol.friendly_name, carol.role_sid) == ("carol", "Carol", ROLE)
    assert json.loads(carol.attributes) == {"c": 3}
    url = f"{server.chat}/v1/Services/{chat_service.sid}/Users/{carol.sid}"
    assert carol.url == url
    assert carol.links == {"user_channels": f"{url}/Channels"}

    fetched = users(carol.sid).fetch()
    assert (fetched.sid, fetched.identity) == (carol.sid, "carol")
    assert json.loads(fetched.attributes) == {"c": 3}
    assert users("carol").fetch().sid == carol.sid

    listed = users.list()
    assert [u.sid for u in listed] == [carol.sid]
    assert listed[0].is_online is None and listed[0].is_notifiable is None
    # v1 quirk (§3.2; twilio_chat_v1.json chat.v1.service.user.attributes): once set,
    # attributes are shown only on a single fetch; a read returns null
    assert listed[0].attributes is None

    updated = users(carol.sid).update(friendly_name="Caroline", attributes='{"d":4}')
    assert updated.friendly_name == "Caroline" and json.loads(updated.attributes) == {"d": 4}
    # v1 and v2 are two views of one service
    v2 = client.chat.v2.services(chat_service.sid).users("carol").fetch()
    assert (v2.sid, v2.friendly_name) == (carol.sid, "Caroline")

    assert users(carol.sid).delete() is True
    assert RECORDER.exchanges[-1].status == 204
    with pytest.raises(TwilioRestException) as err:
        users(carol.sid).fetch()
    assert (err.value.status, err.value.code) == (404, 20404)
    assert users.list() == []
