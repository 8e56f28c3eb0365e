"""Unsealer's failures that need no stack: intake unreachable, cryptography missing."""

import socket
import sys

import pytest
from crm_client.events import Event, decode
from crm_client.unseal import Unsealer, UnsealError, unseal_data
from eventkit import crypto

from tests.client.test_events_decode import message, sealed_interaction


def sealed_event() -> Event:
    return decode(*message(sealed_interaction(crypto.new_data_key())))


async def test_intake_unreachable_is_an_error_not_an_erasure() -> None:
    event = sealed_event()
    # A port held by a socket that does not listen: connections to it are refused.
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        async with Unsealer(f"http://127.0.0.1:{held.getsockname()[1]}", "crm_key", timeout=5) as unsealer:
            with pytest.raises(UnsealError) as info:
                await unsealer.unseal_async(event)
            assert info.value.status is None
            with pytest.raises(UnsealError):
                unsealer.unseal(event)


def test_an_event_without_sealed_fields_needs_no_lookup() -> None:
    plain = decode(*message({"customer_id": "c", "purpose": "marketing", "granted": True}, "crm.consent.changed.v1"))
    with Unsealer("http://127.0.0.1:9", "crm_key") as unsealer:
        assert unsealer.unseal(plain) is plain


def test_without_cryptography_unsealing_says_which_extra_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "cryptography.hazmat.primitives.ciphers.aead", None)
    with pytest.raises(ImportError, match=r"crm-client\[subscriber\]"):
        unseal_data(sealed_event().raw_data, crypto.new_data_key())
