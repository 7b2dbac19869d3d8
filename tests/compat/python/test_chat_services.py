"""Chat v2 / v1 services, and the reachability flag shared by the three dialects."""

import json
import re

import pytest
from twilio.base.exceptions import TwilioRestException

from conftest import ACCOUNT_SID, RECORDER, unique

SID = {p: re.compile(rf"^{p}[0-9a-f]{{32}}$") for p in ("IS", "US", "BS", "CR", "RL")}


def test_chat_v2_service_create_fetch_list_delete(client, server):
    name = unique("Probe Svc")
    created = client.chat.v2.services.create(friendly_name=name)
    assert SID["IS"].match(created.sid)
    assert created.account_sid == ACCOUNT_SID
    assert created.friendly_name == name
    assert created.url == f"{server.chat}/v2/Services/{created.sid}"
    assert created.reachability_enabled is False
    assert created.read_status_enabled is True
    assert created.typing_indicator_timeout == 5
    assert created.limits == {"channel_members": 250, "user_channels": 100}
    for role in ("default_service_role_sid", "default_channel_role_sid",
                 "default_channel_creator_role_sid"):
        assert SID["RL"].match(getattr(created, role))
    assert set(created.links) >= {"channels", "roles", "users", "bindings"}
    assert created.links["users"] == f"{server.chat}/v2/Services/{created.sid}/Users"
    assert RECORDER.exchanges[-1].status == 201

    fetched = client.chat.v2.services(created.sid).fetch()
    assert fetched.sid == created.sid
    assert fetched.friendly_name == name
    assert fetched.date_created == created.date_created
    assert fetched.date_created.tzinfo is not None  # parsed, i.e. exact Twilio date format

    listed = {s.sid: s for s in client.chat.v2.services.list()}
    assert created.sid in listed and listed[created.sid].friendly_name == name
    before = len(RECORDER.requests_to("GET", "/chat/v2/Services?"))
    paged = [s.sid for s in client.chat.v2.services.list(page_size=1)]
    assert paged == list(listed)  # same records, same order, one per page
    assert len(RECORDER.requests_to("GET", "/chat/v2/Services?")) - before in (len(listed), len(listed) + 1)

    assert client.chat.v2.services(created.sid).delete() is True
    assert RECORDER.exchanges[-1].status == 204
    with pytest.raises(TwilioRestException) as err:
        client.chat.v2.services(created.sid).fetch()
    assert (err.value.status, err.value.code) == (404, 20404)
    assert created.sid not in {s.sid for s in client.chat.v2.services.list()}


def test_chat_v2_service_update_full_parameter_set(client, chat_service):
    """The update call twilio-python was observed making (docs/twilio-compatibility.md §6.1),
    read back through update and fetch."""
    updated = client.chat.v2.services(chat_service.sid).update(
        reachability_enabled=True,
        read_status_enabled=False,
        post_webhook_url="https://example.invalid/post",
        webhook_method="POST",
        webhook_filters=["onUserAdded", "onUserUpdated"],
        post_webhook_retry_count=2,
        notifications_new_message_enabled=True,
        limits_user_channels=100,
    )
    for svc in (updated, client.chat.v2.services(chat_service.sid).fetch()):
        assert svc.sid == chat_service.sid
        assert svc.reachability_enabled is True
        assert svc.read_status_enabled is False
        assert svc.post_webhook_url == "https://example.invalid/post"
        assert svc.webhook_method == "POST"
        assert svc.webhook_filters == ["onUserAdded", "onUserUpdated"]
        assert svc.post_webhook_retry_count == 2
        assert svc.pre_webhook_retry_count == 0
        assert svc.notifications["new_message"]["enabled"] is True
        assert svc.limits["user_channels"] == 100
        assert svc.friendly_name == chat_service.friendly_name  # untouched

    again = client.chat.v2.services(chat_service.sid).update(
        friendly_name="Renamed", webhook_method="GET", webhook_filters=["onUserUpdated"],
        limits_user_channels=7, typing_indicator_timeout=9)
    assert again.friendly_name == "Renamed"
    assert again.webhook_method == "GET"
    assert again.webhook_filters == ["onUserUpdated"]
    assert again.limits["user_channels"] == 7
    assert again.typing_indicator_timeout == 9
    assert again.reachability_enabled is True  # unchanged by an update that omits it


def test_chat_v1_service_fetch_update(client, server, chat_service):
    svc = client.chat.v1.services(chat_service.sid).fetch()
    assert svc.sid == chat_service.sid
    assert svc.url == f"{server.chat}/v1/Services/{chat_service.sid}"
    assert set(svc.links) == {"channels", "roles", "users"}
    raw = json.loads(RECORDER.exchanges[-1].text)  # v1 shape differences (§3.1)
    assert isinstance(raw["webhooks"], dict)
    assert not {"pre_webhook_retry_count", "post_webhook_retry_count", "media"} & set(raw)
    updated = client.chat.v1.services(chat_service.sid).update(
        friendly_name="v1 name", read_status_enabled=False)
    assert updated.friendly_name == "v1 name"
    assert updated.read_status_enabled is False
    assert client.chat.v2.services(chat_service.sid).fetch().friendly_name == "v1 name"


def test_reachability_flag_is_shared_across_dialects(client, chat_service):
    sid = chat_service.sid
    assert chat_service.reachability_enabled is False
    conv_cfg = client.conversations.v1.services(sid).configuration()

    v1 = client.chat.v1.services(sid).update(reachability_enabled=True)
    assert v1.reachability_enabled is True
    assert client.chat.v2.services(sid).fetch().reachability_enabled is True
    assert client.chat.v1.services(sid).fetch().reachability_enabled is True
    assert conv_cfg.fetch().reachability_enabled is True

    off = conv_cfg.update(reachability_enabled=False)
    assert off.reachability_enabled is False
    assert client.chat.v2.services(sid).fetch().reachability_enabled is False
    assert client.chat.v1.services(sid).fetch().reachability_enabled is False

    client.chat.v2.services(sid).update(reachability_enabled=True)
    assert conv_cfg.fetch().reachability_enabled is True
