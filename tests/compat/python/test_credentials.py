"""Push credentials: Chat v2 (/v2/Credentials) and Conversations (/v1/Credentials)."""

import json

import pytest
from twilio.base.exceptions import TwilioRestException

from conftest import ACCOUNT_SID, RECORDER, unique
from test_chat_services import SID

CERT = "-----BEGIN CERTIFICATE-----\nMIIBcompatTESTcert\n-----END CERTIFICATE-----"
KEY = "-----BEGIN RSA PRIVATE KEY-----\nMIIEcompatTESTkey\n-----END RSA PRIVATE KEY-----"
SECRET_MARKERS = ("compatTESTcert", "compatTESTkey", "compatTESTsecret")


def assert_no_secrets_echoed(count: int):
    for ex in RECORDER.exchanges[-count:]:
        for marker in SECRET_MARKERS:
            assert marker not in ex.text, f"secret echoed by {ex.method} {ex.url}"
        body = json.loads(ex.text) if ex.text else {}
        for record in body.get("credentials", [body]):
            assert not {"certificate", "private_key", "api_key", "secret"} & set(record)


@pytest.mark.parametrize("dialect", ["chat_v2", "conversations"])
def test_credential_crud(client, server, dialect):
    if dialect == "chat_v2":
        credentials, url_base = client.chat.v2.credentials, f"{server.chat}/v2/Credentials"
    else:
        credentials, url_base = (client.conversations.v1.credentials,
                                 f"{server.conversations}/v1/Credentials")
    start = len(RECORDER.exchanges)
    name = unique("ios")
    cred = credentials.create(type="apn", friendly_name=name, certificate=CERT,
                              private_key=KEY, sandbox=True)
    assert RECORDER.exchanges[-1].status == 201
    assert SID["CR"].match(cred.sid)
    assert cred.account_sid == ACCOUNT_SID
    assert (cred.friendly_name, cred.type, cred.sandbox) == (name, "apn", "true")
    assert cred.url == f"{url_base}/{cred.sid}"

    fetched = credentials(cred.sid).fetch()
    assert (fetched.sid, fetched.friendly_name, fetched.type, fetched.sandbox) == \
        (cred.sid, name, "apn", "true")

    listed = {c.sid: c for c in credentials.list()}
    assert listed[cred.sid].sandbox == "true" and listed[cred.sid].friendly_name == name

    updated = credentials(cred.sid).update(friendly_name="ios-prod", sandbox=False,
                                           certificate=CERT, private_key=KEY)
    assert (updated.friendly_name, updated.sandbox, updated.type) == ("ios-prod", "false", "apn")
    assert credentials(cred.sid).fetch().friendly_name == "ios-prod"

    if dialect == "conversations":  # Conversations update also accepts Type (§4.8)
        retyped = credentials(cred.sid).update(type="fcm", secret="compatTESTsecret")
        assert retyped.type == "fcm"
        assert credentials(cred.sid).update(type="apn").type == "apn"

    fcm = credentials.create(type="fcm", friendly_name="android",
                             secret="compatTESTsecret")
    assert fcm.type == "fcm"
    assert fcm.sandbox in (None, "false")
    assert_no_secrets_echoed(len(RECORDER.exchanges) - start)

    assert credentials(cred.sid).delete() is True
    assert RECORDER.exchanges[-1].status == 204
    assert credentials(fcm.sid).delete() is True
    with pytest.raises(TwilioRestException) as err:
        credentials(cred.sid).fetch()
    assert (err.value.status, err.value.code) == (404, 20404)
    assert cred.sid not in {c.sid for c in credentials.list()}

