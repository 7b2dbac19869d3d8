"""Push bindings (created through reachd's native API) read and deleted through the
Twilio dialects, and the `is_online` / `is_notifiable` reachability fields."""

import json

import pytest
from twilio.base.exceptions import TwilioRestException

from conftest import ACCOUNT_SID, RECORDER
from test_chat_services import SID


@pytest.fixture
def seeded(client, server, chat_service):
    """alice: apn, fcm, gcm; bob: gcm, apn; carol: fcm (one credential on alice's apn)."""
    svc = chat_service.sid
    users = {name: client.chat.v2.services(svc).users.create(identity=name)
             for name in ("alice", "bob", "carol")}
    cred = client.chat.v2.credentials.create(type="apn", friendly_name="bind-cred",
                                             certificate="C", private_key="K")
    b = {}
    b["alice_apn"] = server.register_binding(svc, "alice", "apn", address="tok-a-apn",
                                             endpoint="alice:ios:1", credential_sid=cred.sid)
    b["alice_fcm"] = server.register_binding(svc, users["alice"].sid, "fcm", endpoint="alice:and:1")
    b["alice_gcm"] = server.register_binding(svc, "alice", "gcm", endpoint="alice:and:2")
    b["bob_gcm"] = server.register_binding(svc, "bob", "gcm", endpoint="bob:and:1")
    b["bob_apn"] = server.register_binding(svc, "bob", "apn", endpoint="bob:ios:1")
    b["carol_fcm"] = server.register_binding(svc, "carol", "fcm", endpoint="carol:and:1")
    yield svc, users, {k: v["sid"] for k, v in b.items()}, cred
    client.chat.v2.credentials(cred.sid).delete()


def sids(records):
    return {r.sid for r in records}


def test_chat_v2_bindings_filters(client, seeded):
    svc, _, b, _ = seeded
    bindings = client.chat.v2.services(svc).bindings
    assert sids(bindings.list()) == set(b.values())
    assert sids(bindings.list(binding_type=["apn", "fcm"], identity=["alice", "bob"])) == \
        {b["alice_apn"], b["alice_fcm"], b["bob_apn"]}
    assert sids(bindings.list(binding_type=["gcm"])) == {b["alice_gcm"], b["bob_gcm"]}
    assert sids(bindings.list(identity=["carol"])) == {b["carol_fcm"]}
    assert sids(bindings.list(identity=["bob", "carol"], binding_type=["fcm"])) == {b["carol_fcm"]}
    assert sids(bindings.list(identity=["nobody"])) == set()
    assert RECORDER.requests_to(  # repeated keys, no brackets (§1.3)
        "GET", f"/Bindings?BindingType=apn&BindingType=fcm&Identity=alice&Identity=bob")
    for rec in bindings.list():
        assert rec.binding_type in ("apn", "gcm", "fcm")
    two = bindings.list(limit=2)
    assert len(two) == 2


def test_chat_v2_binding_fetch_delete(client, server, seeded):
    svc, users, b, cred = seeded
    binding = client.chat.v2.services(svc).bindings(b["alice_apn"]).fetch()
    assert SID["BS"].match(binding.sid)
    assert (binding.sid, binding.account_sid, binding.service_sid) == (b["alice_apn"], ACCOUNT_SID, svc)
    assert (binding.identity, binding.binding_type) == ("alice", "apn")
    assert binding.endpoint == "alice:ios:1"
    assert binding.credential_sid == cred.sid
    assert binding.message_types and set(binding.message_types) <= {
        "removed_from_channel", "new_message", "added_to_channel", "invited_to_channel"}
    assert binding.url == f"{server.chat}/v2/Services/{svc}/Bindings/{b['alice_apn']}"
    assert binding.links == {"user": f"{server.chat}/v2/Services/{svc}/Users/alice"}  # identity (§2.3)

    assert client.chat.v2.services(svc).bindings(b["alice_apn"]).delete() is True
    assert RECORDER.exchanges[-1].status == 204
    with pytest.raises(TwilioRestException) as err:
        client.chat.v2.services(svc).bindings(b["alice_apn"]).fetch()
    assert (err.value.status, err.value.code) == (404, 20404)
    assert b["alice_apn"] not in sids(client.chat.v2.services(svc).bindings.list())


def test_chat_v2_user_bindings(client, server, seeded):
    svc, users, b, _ = seeded
    alice = users["alice"]
    ub = client.chat.v2.services(svc).users(alice.sid).user_bindings
    assert sids(ub.list()) == {b["alice_apn"], b["alice_fcm"], b["alice_gcm"]}
    assert sids(ub.list(binding_type=["gcm"])) == {b["alice_gcm"]}
    assert sids(ub.list(binding_type=["gcm", "apn"])) == {b["alice_gcm"], b["alice_apn"]}
    by_identity = client.chat.v2.services(svc).users("alice").user_bindings
    assert sids(by_identity.list(binding_type=["fcm"])) == {b["alice_fcm"]}

    rec = ub(b["alice_gcm"]).fetch()
    assert (rec.sid, rec.user_sid, rec.identity, rec.binding_type) == \
        (b["alice_gcm"], alice.sid, "alice", "gcm")
    assert rec.service_sid == svc and rec.endpoint == "alice:and:2"
    assert rec.url == f"{server.chat}/v2/Services/{svc}/Users/{alice.sid}/Bindings/{b['alice_gcm']}"
    assert "links" not in json.loads(RECORDER.exchanges[-1].text)  # none on user bindings (§2.3)

    with pytest.raises(TwilioRestException) as err:  # bob's binding is not alice's
        ub(b["bob_gcm"]).fetch()
    assert (err.value.status, err.value.code) == (404, 20404)

    assert ub(b["alice_gcm"]).delete() is True
    assert RECORDER.exchanges[-1].status == 204
    assert sids(ub.list()) == {b["alice_apn"], b["alice_fcm"]}
    assert b["alice_gcm"] not in sids(client.chat.v2.services(svc).bindings.list())


def test_conversations_bindings(client, server, seeded):
    svc, users, b, cred = seeded
    bindings = client.conversations.v1.services(svc).bindings
    assert sids(bindings.list()) == set(b.values())
    assert sids(bindings.list(binding_type=["apn", "fcm"], identity=["alice", "bob"])) == \
        {b["alice_apn"], b["alice_fcm"], b["bob_apn"]}
    assert sids(bindings.list(binding_type=["apn"], identity=["carol"], limit=1)) == set()

    rec = bindings(b["bob_apn"]).fetch()
    assert (rec.sid, rec.chat_service_sid, rec.account_sid) == (b["bob_apn"], svc, ACCOUNT_SID)
    assert (rec.identity, rec.binding_type, rec.endpoint) == ("bob", "apn", "bob:ios:1")
    assert rec.url == f"{server.conversations}/v1/Services/{svc}/Bindings/{b['bob_apn']}"
    assert set(rec.message_types) <= {"removed_from_conversation", "new_message",
                                      "added_to_conversation"}  # §4.7
    assert bindings(b["alice_apn"]).fetch().credential_sid == cred.sid
    raw = server.raw("GET", f"/conversations/v1/Services/{svc}/Bindings/{b['bob_apn']}").json()
    assert "links" not in raw and "user_sid" not in raw and "service_sid" not in raw

    assert bindings(b["bob_apn"]).delete() is True
    assert RECORDER.exchanges[-1].status == 204
    with pytest.raises(TwilioRestException) as err:
        bindings(b["bob_apn"]).fetch()
    assert (err.value.status, err.value.code) == (404, 20404)
    assert b["bob_apn"] not in sids(client.chat.v2.services(svc).bindings.list())


# --------------------------------------------------------------------------- reachability


def test_reachability_fields_follow_bindings(client, server, chat_service):
    svc = chat_service.sid
    chat_users = client.chat.v2.services(svc).users
    conv_users = client.conversations.v1.services(svc).users
    dora = chat_users.create(identity="dora")
    server.register_binding(svc, "dora", "apn", endpoint="dora:ios:1")

    # reachability disabled: null on fetch, even with a binding
    for u in (chat_users("dora").fetch(), conv_users("dora").fetch(),
              client.chat.v1.services(svc).users("dora").fetch()):
        assert u.is_online is None and u.is_notifiable is None

    client.chat.v2.services(svc).update(reachability_enabled=True)
    erin = chat_users.create(identity="erin")
    b1 = server.register_binding(svc, "erin", "fcm", endpoint="erin:and:1")
    b2 = server.register_binding(svc, erin.sid, "apn", endpoint="erin:ios:1")
    fetched = chat_users(erin.sid).fetch()
    assert fetched.is_notifiable is True
    assert fetched.is_online is None  # never online since reachability was enabled (§5)
    assert conv_users("erin").fetch().is_notifiable is True
    assert client.chat.v1.services(svc).users(erin.sid).fetch().is_notifiable is True

    # read (list) responses always carry null (§5)
    for listing in (chat_users.list(), conv_users.list(), client.chat.v1.services(svc).users.list()):
        assert listing and all(u.is_online is None and u.is_notifiable is None for u in listing)

    client.chat.v2.services(svc).bindings(b1["sid"]).delete()
    assert chat_users("erin").fetch().is_notifiable is True  # one binding left
    client.chat.v2.services(svc).users("erin").user_bindings(b2["sid"]).delete()
    assert chat_users("erin").fetch().is_notifiable is False
    assert conv_users(erin.sid).fetch().is_notifiable is False

    client.conversations.v1.services(svc).configuration().update(reachability_enabled=False)
    after = chat_users("erin").fetch()
    assert after.is_online is None and after.is_notifiable is None
