"""Personal field values in a fields_set event: sealed under the customer's key (readable again
with it), "[erased]" for an erased customer; readable values and tag events untouched."""

from eventkit import crypto
from servicekit.keyring import KeyRing, MemoryKeySource

from case import fields, handlers
from case.domain import Draft
from case.tests.support import new_case, utc
from contracts import fields as f

SERIAL = f.FieldDefinition(name="serial", type="text", personal=True)
MODEL = f.FieldDefinition(name="model", type="text")


def drafts() -> list[Draft]:
    state = new_case(utc(2026, 1, 5, 9))
    decided = fields.set_fields(state, {"serial": SERIAL, "model": MODEL}, {"serial": "SN-1", "model": "A1"}, "k")
    return decided + fields.change_tags(state, ["vip"], [], "k")


async def test_personal_values_are_sealed_and_open_again_with_the_key() -> None:
    ring = KeyRing(MemoryKeySource())
    sealed, tags = await handlers._sealed(ring, "cust-1", drafts())
    assert sealed["personal"] == {"serial": crypto.SEALED} and sealed["values"] == {"model": "A1"}
    assert "SN-1" not in str(sealed) and tags["tags"] == ["vip"] and "sealed" not in tags
    [opened] = await ring.unseal([sealed])
    assert f.personal_value(opened["personal"]["serial"]) == "SN-1"


async def test_an_erased_customers_personal_values_are_not_kept() -> None:
    source = MemoryKeySource()
    source.erase("cust-1")
    sealed, _ = await handlers._sealed(KeyRing(source), "cust-1", drafts())
    assert sealed["personal"] == {"serial": crypto.ERASED} and sealed["values"] == {"model": "A1"}
