"""from_kafka spells every event id as str(uuid.UUID(...)) does, whether it takes the shortcut for
ids already spelled that way or parses the others."""

import uuid

import pytest
from eventkit.envelope import DecodeError, from_kafka, new_event, to_kafka

TP = "00-" + "a" * 32 + "-" + "b" * 16 + "-01"
ID = "1b4e28ba-2fa1-11d2-883f-0016d3cca427"


def decoded_id(ce_id: str) -> str:
    key, value, headers = to_kafka(new_event("crm.x.v1", "c1", {}, "/crm/test", TP))
    return from_kafka(key, value, [(k, ce_id.encode() if k == "ce_id" else v) for k, v in headers]).id


@pytest.mark.parametrize(
    "spelling", [ID, ID.upper(), "{" + ID + "}", "urn:uuid:" + ID, ID.replace("-", ""), " " + ID[:8] + ID[8:]]
)
def test_every_spelling_of_one_id_decodes_to_the_canonical_one(spelling: str) -> None:
    if spelling.startswith(" "):  # not a UUID for uuid.UUID either
        with pytest.raises(DecodeError):
            decoded_id(spelling)
        return
    assert decoded_id(spelling) == str(uuid.UUID(spelling)) == ID


def test_random_ids_round_trip_unchanged() -> None:
    for _ in range(200):
        u = str(uuid.uuid4())
        assert decoded_id(u) == u


@pytest.mark.parametrize("broken", [ID[:-1], ID + "0", ID[:-1] + "g", ID + "\n", ""])
def test_near_misses_are_still_judged_by_uuid_parse(broken: str) -> None:
    try:
        expected: str | None = str(uuid.UUID(broken))
    except ValueError:
        expected = None
    if expected is None:
        with pytest.raises(DecodeError):
            decoded_id(broken)
    else:
        assert decoded_id(broken) == expected
