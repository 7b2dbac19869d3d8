"""Conversations v1: services, service and account configuration (+ webhooks), users and the
`/v1/Users` default-service shortcut."""

import json
import secrets

import pytest
from twilio.base.exceptions import TwilioRestException

from conftest import ACCOUNT_SID, RECORDER, unique
from test_chat_services import SID

ROLE = "RL" + secrets.token_hex(16)
DEFAULT_NAME = "Default Conversations Service"


@pytest.fixture
def conv_service(client):
    service = client.conversations.v1.services.create(friendly_name=unique("Conv Svc"))
    yield service
    try:
        client.conversations.v1.services(service.sid).delete()
    except TwilioRestException:
        pass


def test_conversations_service_crud(client, server):
    services = client.conversations.v1.services
    name = unique("Conv Svc")
    svc = services.create(friendly_name=name)
    assert RECORDER.exchanges[-1].status == 201
    assert SID["IS"].match(svc.sid)
    assert (svc.account_sid, svc.friendly_name) == (ACCOUNT_SID, name)
    url = f"{server.conversations}/v1/Services/{svc.sid}"
    assert svc.url == url
    assert svc.links == {k: f"{url}/{v}" for k, v in {
        "conversations": "Conversations", "users": "Users", "roles": "Roles",
        "bindings": "Bindings", "configuration": "Configuration",
        "participant_conversations": "ParticipantConversations"}.items()}

    fetched = services(svc.sid).fetch()
    assert (fetched.sid, fetched.friendly_name, fetched.date_created) == \
        (svc.sid, name, svc.date_created)
    assert svc.sid in {s.sid for s in services.list()}
    # the same IS service, seen through Chat v2
    assert client.chat.v2.services(svc.sid).fetch().friendly_name == name

    assert services(svc.sid).delete() is True
    assert RECORDER.exchanges[-1].status == 204
    with pytest.raises(TwilioRestException) as err:
        services(svc.sid).fetch()
    assert (err.value.status, err.value.code) == (404, 20404)
    with pytest.raises(TwilioRestException) as err:
        client.chat.v2.services(svc.sid).fetch()
    assert err.value.status == 404


def test_service_configuration(client, server, conv_service):
    sid = conv_service.sid
    cfg = client.conversations.v1.services(sid).configuration().fetch()
    assert cfg.chat_service_sid == sid
    assert cfg.reachability_enabled is False
    for role in ("default_conversation_creator_role_sid", "default_conversation_role_sid",
                 "default_chat_service_role_sid"):
        assert SID["RL"].match(getattr(cfg, role))
    url = f"{server.conversations}/v1/Services/{sid}/Configuration"
    assert cfg.url == url
    assert cfg.links == {"notifications": f"{url}/Notifications", "webhooks": f"{url}/Webhooks"}
    assert "account_sid" not in json.loads(RECORDER.exchanges[-1].text)  # §4.2, §9.9

    updated = client.conversations.v1.services(sid).configuration().update(
        reachability_enabled=True, default_chat_service_role_sid=ROLE)
    assert updated.reachability_enabled is True
    assert updated.default_chat_service_role_sid == ROLE
    again = client.conversations.v1.services(sid).configuration().fetch()
    assert (again.reachability_enabled, again.default_chat_service_role_sid) == (True, ROLE)
    assert client.chat.v2.services(sid).fetch().reachability_enabled is True


def test_service_webhook_configuration(client, server, conv_service):
    sid = conv_service.sid
    hooks = client.conversations.v1.services(sid).configuration.webhooks()
    initial = hooks.fetch()
    assert (initial.account_sid, initial.chat_service_sid) == (ACCOUNT_SID, sid)
    assert initial.url == f"{server.conversations}/v1/Services/{sid}/Configuration/Webhooks"
    # nothing configured: the four configurable fields are null (§4.3)
    assert (initial.pre_webhook_url, initial.post_webhook_url, initial.filters, initial.method) == \
        (None, None, None, None)

    updated = hooks.update(post_webhook_url="https://example.invalid/conv-post",
                           filters=["onMessageAdded", "onParticipantAdded", "onUserUpdated"],
                           method="POST")
    for w in (updated, hooks.fetch()):
        assert w.post_webhook_url == "https://example.invalid/conv-post"
        assert w.filters == ["onMessageAdded", "onParticipantAdded", "onUserUpdated"]
        assert w.method == "POST"
        assert w.pre_webhook_url is None

    changed = hooks.update(method="GET", pre_webhook_url="https://example.invalid/conv-pre")
    assert (changed.method, changed.pre_webhook_url) == ("GET", "https://example.invalid/conv-pre")
    assert changed.post_webhook_url == "https://example.invalid/conv-post"


def test_account_configuration_and_webhooks(fresh_server):
    client = fresh_server.client()
    conv = client.conversations.v1
    svc = conv.services.create(friendly_name="Account default")

    cfg = conv.configuration().update(default_chat_service_sid=svc.sid)
    for c in (cfg, conv.configuration().fetch()):
        assert c.account_sid == ACCOUNT_SID
        assert c.default_chat_service_sid == svc.sid
        assert c.url == f"{fresh_server.conversations}/v1/Configuration"
        assert c.links["service"] == \
            f"{fresh_server.conversations}/v1/Services/{svc.sid}/Configuration"
        assert c.links["webhooks"] == f"{fresh_server.conversations}/v1/Configuration/Webhooks"

    hooks = conv.configuration.webhooks()
    updated = hooks.update(filters=["onUserUpdated", "onUserAdded"], method="POST",
                           post_webhook_url="https://example.invalid/account-post",
                           target="webhook")
    for w in (updated, hooks.fetch()):
        assert w.account_sid == ACCOUNT_SID
        assert w.filters == ["onUserUpdated", "onUserAdded"]
        assert w.method == "POST"
        assert w.post_webhook_url == "https://example.invalid/account-post"
        assert w.target == "webhook"
        assert w.url == f"{fresh_server.conversations}/v1/Configuration/Webhooks"
    assert hooks.update(method="GET").method == "GET"
    assert hooks.fetch().filters == ["onUserUpdated", "onUserAdded"]


def test_service_users_crud(client, server, conv_service):
    sid = conv_service.sid
    users = client.conversations.v1.services(sid).users
    carol = users.create(identity="carol", friendly_name="Carol", attributes='{"x":1}',
                         role_sid=ROLE, x_twilio_webhook_enabled="true")
    assert RECORDER.exchanges[-1].status == 201
    assert SID["US"].match(carol.sid)
    assert (carol.identity, carol.friendly_name, carol.role_sid) == ("carol", "Carol", ROLE)
    assert (carol.chat_service_sid, carol.account_sid) == (sid, ACCOUNT_SID)
    assert json.loads(carol.attributes) == {"x": 1}
    url = f"{server.conversations}/v1/Services/{sid}/Users/{carol.sid}"
    assert carol.url == url
    assert carol.links == {"user_conversations": f"{url}/Conversations"}
    assert "joined_channels_count" not in json.loads(RECORDER.exchanges[-1].text)  # §9.9

    for u in (users("carol").fetch(), users(carol.sid).fetch()):
        assert (u.sid, u.identity, u.url) == (carol.sid, "carol", url)
        assert u.is_online is None and u.is_notifiable is None

    with pytest.raises(TwilioRestException) as err:
        users.create(identity="carol")
    assert (err.value.status, err.value.code) == (409, 50201)

    odd = users.create(identity="eve smith+2@example.com")
    assert users("eve smith+2@example.com").fetch().sid == odd.sid

    assert [u.sid for u in users.list()] == [carol.sid, odd.sid]
    updated = users("carol").update(friendly_name="Caro", attributes='{"y":2}',
                                    x_twilio_webhook_enabled="true")
    assert (updated.sid, updated.friendly_name) == (carol.sid, "Caro")
    assert json.loads(updated.attributes) == {"y": 2}
    # Chat v2 sees the same user
    assert client.chat.v2.services(sid).users("carol").fetch().friendly_name == "Caro"

    assert users("carol").delete(x_twilio_webhook_enabled="true") is True
    assert RECORDER.exchanges[-1].status == 204
    assert users(odd.sid).delete() is True
    with pytest.raises(TwilioRestException) as err:
        users("carol").fetch()
    assert (err.value.status, err.value.code) == (404, 20404)
    assert users.list() == []


def _exercise_default_users(client, server, expected_service_sid):
    users = client.conversations.v1.users
    dave = users.create(identity="dave", role_sid=ROLE)
    assert RECORDER.exchanges[-1].status == 201
    assert dave.identity == "dave" and dave.role_sid == ROLE
    if expected_service_sid:
        assert dave.chat_service_sid == expected_service_sid
    service_sid = dave.chat_service_sid
    assert SID["IS"].match(service_sid)
    url = f"{server.conversations}/v1/Users/{dave.sid}"
    assert dave.url == url  # shortcut urls (§4.6)
    assert dave.links == {"user_conversations": f"{url}/Conversations"}

    fetched = users("dave").fetch()
    assert (fetched.sid, fetched.chat_service_sid, fetched.url) == (dave.sid, service_sid, url)
    updated = users("dave").update(friendly_name="D", x_twilio_webhook_enabled="true")
    assert (updated.sid, updated.friendly_name) == (dave.sid, "D")
    assert users(dave.sid).fetch().friendly_name == "D"
    assert [u.sid for u in users.list()] == [dave.sid]
    # the same user through the service-scoped path
    scoped = client.conversations.v1.services(service_sid).users("dave").fetch()
    assert (scoped.sid, scoped.friendly_name) == (dave.sid, "D")

    with pytest.raises(TwilioRestException) as err:
        users.create(identity="dave")
    assert (err.value.status, err.value.code) == (409, 50201)

    assert users("dave").delete() is True
    assert RECORDER.exchanges[-1].status == 204
    with pytest.raises(TwilioRestException) as err:
        users("dave").fetch()
    assert (err.value.status, err.value.code) == (404, 20404)
    assert users.list() == []
    return service_sid


def test_default_service_users_with_configured_default(fresh_server):
    client = fresh_server.client()
    svc = client.conversations.v1.services.create(friendly_name="Configured default")
    client.conversations.v1.configuration().update(default_chat_service_sid=svc.sid)
    _exercise_default_users(client, fresh_server, svc.sid)
    assert [s.sid for s in client.conversations.v1.services.list()] == [svc.sid]


def test_default_service_auto_created_on_fresh_server(fresh_server):
    client = fresh_server.client()
    assert client.conversations.v1.services.list() == []
    service_sid = _exercise_default_users(client, fresh_server, None)
    services = client.conversations.v1.services.list()
    assert [(s.sid, s.friendly_name) for s in services] == [(service_sid, DEFAULT_NAME)]
    assert client.conversations.v1.configuration().fetch().default_chat_service_sid == service_sid
    # later uses keep the same default service
    erin = client.conversations.v1.users.create(identity="erin")
    assert erin.chat_service_sid == service_sid


def test_default_service_recreated_after_deleting_it(fresh_server):
    client = fresh_server.client()
    old = client.conversations.v1.services.create(friendly_name="Doomed default")
    client.conversations.v1.configuration().update(default_chat_service_sid=old.sid)
    client.conversations.v1.services(old.sid).delete()
    service_sid = _exercise_default_users(client, fresh_server, None)
    assert service_sid != old.sid
    assert client.conversations.v1.services(service_sid).fetch().friendly_name == DEFAULT_NAME
    assert client.conversations.v1.configuration().fetch().default_chat_service_sid == service_sid
