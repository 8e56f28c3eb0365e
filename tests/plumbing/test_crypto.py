"""Sealing personal fields (eventkit.crypto) and the key ring's cache, without any server."""

import base64
import copy
import os

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from eventkit import crypto
from hypothesis import given
from hypothesis import strategies as st
from servicekit.keyring import KeyErased, KeyRing, MemoryKeySource

from contracts.events import METADATA_READABLE_KEYS, PERSONAL_FIELDS

KEY = crypto.new_data_key()
OTHER = crypto.new_data_key()


@given(content=st.text(max_size=300), email=st.text(min_size=1, max_size=50))
def test_sealed_fields_round_trip_and_hold_no_plaintext(content: str, email: str) -> None:
    data = {"customer_id": "c1", "content": content, "identifiers": [{"kind": "email", "value": email}]}
    sealed = crypto.seal(data, ["content", "identifiers.*.value"], "c1", KEY)
    assert sealed["content"] == crypto.SEALED and sealed["identifiers"][0]["value"] == crypto.SEALED
    assert set(sealed["sealed"]["fields"]) == {"content", "identifiers.0.value"}
    assert data["content"] == content  # the input is not changed
    assert crypto.unseal(sealed, {"c1": KEY}) == data


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3),
    max_leaves=12,
)


@given(metadata=st.dictionaries(st.text(max_size=8), JSON, max_size=5))
def test_free_form_metadata_seals_every_string_but_the_readable_keys(metadata: dict) -> None:
    """Keys with dots and tildes, nested lists and dicts: every string sealed, the shape kept."""
    patterns = PERSONAL_FIELDS["crm.interaction.recorded.v1"]
    data = {"content": None, "metadata": {**metadata, "score": "9", "case_type": "repair"}}
    sealed = crypto.seal(data, patterns, "c1", KEY)
    assert sealed["metadata"]["score"] == "9" and sealed["metadata"]["case_type"] == "repair"

    def strings(value: object) -> list[str]:
        if isinstance(value, dict):
            return [s for v in value.values() for s in strings(v)]
        if isinstance(value, list):
            return [s for v in value for s in strings(v)]
        return [value] if isinstance(value, str) else []

    kept = {k: v for k, v in sealed["metadata"].items() if k not in METADATA_READABLE_KEYS}
    assert set(strings(kept)) <= {crypto.SEALED}
    before = copy.deepcopy(sealed)
    assert crypto.unseal(sealed, {"c1": KEY}) == data
    assert crypto.unseal(sealed, {"c1": AESGCM(KEY)}) == data  # the cipher instead of the key
    erased = crypto.unseal(sealed, {})
    assert sealed == before  # unsealing copies what it restores; the sealed data stays as it was
    rest = {k: v for k, v in erased["metadata"].items() if k not in METADATA_READABLE_KEYS}
    assert set(strings(rest)) <= {crypto.ERASED, crypto.SEALED}  # SEALED: a value that was the marker itself


def test_without_the_key_fields_read_erased_and_the_shape_stays() -> None:
    sealed = crypto.seal({"content": "secret", "kind": "call"}, ["content", "missing.path"], "c1", KEY)
    assert crypto.unseal(sealed, {"c1": None}) == {"content": crypto.ERASED, "kind": "call"}
    assert crypto.unseal(sealed, {}) == {"content": crypto.ERASED, "kind": "call"}
    assert crypto.unseal(sealed, {"c1": OTHER}) == {"content": crypto.ERASED, "kind": "call"}


def test_a_token_cannot_be_moved_to_another_customer_or_field() -> None:
    token = crypto.encrypt_text(KEY, "c1|content", "secret")
    assert crypto.decrypt_text(KEY, "c1|content", token) == "secret"
    for aad in ("c2|content", "c1|title"):
        with pytest.raises(crypto.CryptoError):
            crypto.decrypt_text(KEY, aad, token)
    assert crypto.open_token(token, "c1", "content", {"c1": KEY}) == "secret"
    assert crypto.open_token(token, "c1", "content", {"c1": None}) == crypto.ERASED


def test_nothing_personal_means_nothing_sealed() -> None:
    data = {"content": None, "sealed": None}
    assert crypto.seal(data, ["content"], "c1", KEY) == {"content": None}
    assert crypto.unseal({"content": "x"}, {}) == {"content": "x"}


def test_wrapped_keys_and_blind_indexes() -> None:
    master = os.urandom(32)
    wrapping = crypto.derive_key(master, "wrap")
    assert crypto.derive_key(master, "index") != wrapping
    wrapped = crypto.wrap_key(wrapping, "c1", KEY)
    assert KEY not in wrapped and crypto.unwrap_key(wrapping, "c1", wrapped) == KEY
    with pytest.raises(crypto.CryptoError):
        crypto.unwrap_key(wrapping, "c2", wrapped)
    index = crypto.derive_key(master, "index")
    assert crypto.blind_index(index, "email:a@b.c") == crypto.blind_index(index, "email:a@b.c")
    assert crypto.blind_index(index, "email:a@b.c") != crypto.blind_index(OTHER, "email:a@b.c")
    assert "a@b.c" not in crypto.blind_index(index, "email:a@b.c")
    encoded = base64.b64encode(master).decode()
    assert crypto.parse_master_key(encoded) == master
    with pytest.raises(ValueError, match="32 bytes"):
        crypto.parse_master_key("c2hvcnQ=")


async def test_the_ring_caches_keys_and_forgets_erased_customers() -> None:
    source = MemoryKeySource()
    ring = KeyRing(source, ttl_s=60)
    key = await ring.key_for_writing("c1")
    assert (await ring.keys(["c1", "unknown"])) == {"c1": key, "unknown": None}
    source.erase("c1")
    assert (await ring.keys(["c1"])) == {"c1": key}  # cached until told or expired
    ring.forget(["c1"])
    assert (await ring.keys(["c1"])) == {"c1": None}
    with pytest.raises(KeyErased):
        await ring.key_for_writing("c1")
    sealed = crypto.seal({"content": "hi"}, ["content"], "c2", await ring.key_for_writing("c2"))
    assert await ring.unseal([sealed]) == [{"content": "hi"}]
