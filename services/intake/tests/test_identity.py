"""Identity resolution and identifier normalisation: pure, in memory."""

import hashlib
import hmac
import itertools
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from intake import domain
from intake.domain import Ident, IdentityResolver, IdentitySnapshot, InvalidInput

T0 = datetime(2026, 1, 1, tzinfo=UTC)
EMAIL = Ident("email", "ann@example.com")
PHONE = Ident("phone", "+14155552671")
CHAT = Ident("external", "ann#42", "chat")


def resolver(snapshot: IdentitySnapshot | None = None) -> IdentityResolver:
    counter = itertools.count(1)
    return IdentityResolver(snapshot or IdentitySnapshot(), T0 + timedelta(days=1), lambda: f"new-{next(counter)}")


def test_unknown_identifiers_create_one_customer_with_all_of_them() -> None:
    r = resolver()
    res = r.resolve(None, [EMAIL, PHONE, EMAIL])
    assert res.customer_id == "new-1"
    assert res.created == (EMAIL, PHONE)
    assert res.merges == () and res.added == ()
    assert r.resolve(None, [PHONE]).customer_id == "new-1"


def test_a_known_identifier_links_the_new_ones() -> None:
    snap = IdentitySnapshot(owner={EMAIL.key: "a"}, created={"a": T0})
    res = resolver(snap).resolve(None, [EMAIL, CHAT])
    assert (res.customer_id, res.created, res.merges, res.added) == ("a", None, (), (CHAT,))


def test_identifiers_of_two_customers_merge_into_the_oldest() -> None:
    snap = IdentitySnapshot(
        owner={EMAIL.key: "young", PHONE.key: "old"}, created={"young": T0 + timedelta(hours=1), "old": T0}
    )
    r = resolver(snap)
    res = r.resolve(None, [EMAIL, PHONE, CHAT], verified=True)
    assert res.customer_id == "old"
    assert res.merges == (domain.Merge("old", "young", EMAIL),)  # the merged one's identifier tied them
    assert res.added == (CHAT,)
    assert snap.find("young") == "old"
    # later requests that name the merged customer land on the survivor, without a second merge
    again = r.resolve("young", [EMAIL], verified=True)
    assert (again.customer_id, again.merges) == ("old", ())


def test_a_customer_id_and_someone_elses_identifier_merge() -> None:
    snap = IdentitySnapshot(owner={PHONE.key: "b"}, created={"a": T0, "b": T0 + timedelta(minutes=1)})
    res = resolver(snap).resolve("a", [PHONE], verified=True)
    assert res.customer_id == "a"
    assert res.merges == (domain.Merge("a", "b", PHONE),)


def test_three_customers_in_one_request_all_merge_into_the_oldest() -> None:
    snap = IdentitySnapshot(
        owner={EMAIL.key: "b", PHONE.key: "c", CHAT.key: "a"},
        created={"a": T0, "b": T0 + timedelta(hours=1), "c": T0 + timedelta(hours=2)},
    )
    res = resolver(snap).resolve(None, [EMAIL, PHONE, CHAT], verified=True)
    assert res.customer_id == "a"
    assert {(m.merged_id, m.linked_by) for m in res.merges} == {("b", EMAIL), ("c", PHONE)}


def test_unknown_customer_id_is_an_error_on_that_field() -> None:
    for verified in (False, True):
        with pytest.raises(InvalidInput) as info:
            resolver().resolve("ghost", [EMAIL], verified=verified)
        assert info.value.field == "customer.id"


# --- identity trust (docs/product.md §14): a channel key's identifiers are claims -------------------------


def test_a_claim_creates_a_customer_whose_identifiers_are_claimed() -> None:
    r = resolver()
    res = r.resolve(None, [EMAIL, PHONE])
    assert (res.customer_id, res.created, res.trust) == ("new-1", (EMAIL, PHONE), domain.CLAIMED)
    assert r.snapshot.trust == {EMAIL.key: domain.CLAIMED, PHONE.key: domain.CLAIMED}
    # a verifying request naming it only through that claim upgrades nothing (see the takeover below)
    later = r.resolve(None, [EMAIL], verified=True)
    assert (later.customer_id, later.verified, r.snapshot.trust[EMAIL.key]) == ("new-1", (), domain.CLAIMED)


def test_a_claimed_address_on_a_customer_id_is_added_as_claimed() -> None:
    """The takeover of issue 23: {"id": victim, "email": attacker} from a channel key."""
    snap = IdentitySnapshot(owner={EMAIL.key: "victim"}, trust={EMAIL.key: domain.VERIFIED}, created={"victim": T0})
    attacker = Ident("email", "mallory@example.com")
    res = resolver(snap).resolve("victim", [attacker])
    assert (res.customer_id, res.merges, res.added, res.trust) == ("victim", (), (attacker,), domain.CLAIMED)
    assert snap.trust[attacker.key] == domain.CLAIMED and snap.trust[EMAIL.key] == domain.VERIFIED


def test_a_claim_naming_two_customers_suggests_and_never_merges() -> None:
    snap = IdentitySnapshot(
        owner={EMAIL.key: "young", PHONE.key: "old"}, created={"young": T0 + timedelta(hours=1), "old": T0}
    )
    r = resolver(snap)
    res = r.resolve(None, [EMAIL, PHONE, CHAT])
    assert (res.customer_id, res.merges) == ("old", ())
    assert res.suggestions == (domain.Suggestion("old", "young", EMAIL),)
    assert res.added == (CHAT,) and snap.trust[CHAT.key] == domain.CLAIMED
    assert snap.merged_into == {} and set(snap.created) == {"old", "young"}  # both still live
    assert r.resolve(None, [EMAIL]).customer_id == "young"  # later items of a batch see no merge


def test_a_claim_by_id_stays_on_that_customer_and_suggests_the_other() -> None:
    snap = IdentitySnapshot(owner={PHONE.key: "b"}, created={"a": T0 + timedelta(hours=1), "b": T0})
    res = resolver(snap).resolve("a", [PHONE])
    assert (res.customer_id, res.merges, res.added) == ("a", (), ())
    [suggestion] = res.suggestions
    assert suggestion == domain.Suggestion("b", "a", PHONE)  # the older would survive
    assert suggestion.pair == ("a", "b")


def test_a_claim_on_a_merged_id_lands_on_the_survivor_as_a_claim() -> None:
    snap = IdentitySnapshot(merged_into={"gone": "live"}, created={"live": T0})
    res = resolver(snap).resolve("gone", [EMAIL])
    assert (res.customer_id, res.added, res.trust, res.suggestions) == ("live", (EMAIL,), domain.CLAIMED, ())


def test_a_verifying_request_upgrades_claimed_identifiers_it_names() -> None:
    snap = IdentitySnapshot(
        owner={EMAIL.key: "a", PHONE.key: "a"}, trust={EMAIL.key: domain.CLAIMED, PHONE.key: domain.VERIFIED},
        created={"a": T0},
    )  # fmt: skip
    assert resolver(snap).resolve("a", [EMAIL, PHONE]).verified == ()  # a claim upgrades nothing
    res = resolver(snap).resolve("a", [EMAIL, PHONE], verified=True)
    assert res.verified == (EMAIL,) and snap.trust[EMAIL.key] == domain.VERIFIED


def test_a_verifying_request_does_not_take_over_a_customer_through_a_claimed_link() -> None:
    """A channel key claims mallory's address on the victim; mallory then signs in somewhere that
    verifies her address: she owns the address, not the victim's record."""
    mallory, mallory_phone = Ident("email", "mallory@example.com"), Ident("phone", "+14155550000")
    snap = IdentitySnapshot(
        owner={mallory.key: "victim", EMAIL.key: "victim", mallory_phone.key: "m"},
        trust={mallory.key: domain.CLAIMED, EMAIL.key: domain.VERIFIED, mallory_phone.key: domain.VERIFIED},
        created={"victim": T0, "m": T0 + timedelta(hours=1)},
    )
    alone = resolver(snap).resolve(None, [mallory], verified=True)
    assert (alone.customer_id, alone.merges, alone.verified) == ("victim", (), ())  # a claim: nothing upgraded
    assert snap.trust[mallory.key] == domain.CLAIMED
    # with her own verified phone: her record, no merge, no upgrade; the link becomes a suggestion
    res = resolver(snap).resolve(None, [mallory, mallory_phone], verified=True)
    assert (res.customer_id, res.merges, res.verified) == ("m", (), ())
    assert res.suggestions == (domain.Suggestion("victim", "m", mallory),)
    assert snap.trust[mallory.key] == domain.CLAIMED and set(snap.created) == {"victim", "m"}


def test_only_a_single_address_of_an_inbound_interaction_counts_as_used_by_the_customer() -> None:
    assert domain.used_themselves("inbound", [EMAIL])
    assert domain.used_themselves("inbound", [PHONE, CHAT])  # an external id is no address
    assert not domain.used_themselves("inbound", [EMAIL, PHONE])  # one could be the claimant's
    assert not domain.used_themselves("outbound", [EMAIL])
    assert not domain.used_themselves("inbound", [CHAT])


def test_merge_consent_keeps_the_most_restrictive_answer() -> None:
    survivor = {("marketing", "email"): True, ("marketing", "sms"): False, ("service", "*"): True}
    merged = {("marketing", "email"): False, ("marketing", "sms"): True, ("third_party_sharing", "*"): False}
    assert domain.merged_consent(survivor, merged) == {
        ("marketing", "email"): False,  # withdrawn on either record: withdrawn
        ("third_party_sharing", "*"): False,  # known only on the merged record: kept
    }


# --- normalisation ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "region", "expected"),
    [
        ("+1 415 555 2671", "US", "+14155552671"),
        ("(415) 555-2671", "US", "+14155552671"),
        ("415.555.2671", "US", "+14155552671"),
        ("030 1234567", "DE", "+49301234567"),
        ("+49 30 1234567", "US", "+49301234567"),
        ("020 7946 0958", "GB", "+442079460958"),
    ],
)
def test_phones_become_e164(raw: str, region: str, expected: str) -> None:
    assert domain.normalise_phone(raw, region) == Ident("phone", expected)


@pytest.mark.parametrize("raw", ["123", "not a phone", "+1 555", "+999 1234567"])
def test_invalid_phones_name_the_field(raw: str) -> None:
    with pytest.raises(InvalidInput) as info:
        domain.normalise_phone(raw, "US")
    assert info.value.field == "customer.phone"


separators = st.sampled_from(["", " ", "-", ".", "  "])


@given(
    area=st.sampled_from(["415", "212", "312", "617"]),
    exchange=st.integers(200, 999).map(str),
    line=st.integers(0, 9999).map(lambda n: f"{n:04d}"),
    seps=st.tuples(separators, separators),
    style=st.sampled_from(["plain", "parens", "plus1", "1"]),
    pad=st.tuples(st.sampled_from(["", " ", "\t"]), st.sampled_from(["", " ", "\n"])),
)
def test_any_spelling_of_a_us_number_gives_one_e164(area, exchange, line, seps, style, pad) -> None:
    national = {"plain": area, "parens": f"({area})", "plus1": f"+1 {area}", "1": f"1{seps[0]}{area}"}[style]
    raw = f"{pad[0]}{national}{seps[0]}{exchange}{seps[1]}{line}{pad[1]}"
    try:
        got = domain.normalise_phone(raw, "US")
    except InvalidInput:
        # some exchange/line combinations are not assignable numbers; they are refused whatever the spelling
        with pytest.raises(InvalidInput):
            domain.normalise_phone(f"+1{area}{exchange}{line}", "US")
        return
    assert got == Ident("phone", f"+1{area}{exchange}{line}")
    assert domain.normalise_phone(got.value, "DE") == got  # E.164 reads the same from any region


@given(
    # dot-atoms: a period neither first, last nor doubled (email-validator refuses those)
    local=st.from_regex(r"[a-z0-9][a-z0-9_+-]{0,10}(\.[a-z0-9_+-]{1,8}){0,2}", fullmatch=True),
    domain_name=st.from_regex(r"[a-z0-9]{1,10}\.(com|org|de|co\.uk)", fullmatch=True),
    case=st.sampled_from([str.lower, str.upper, str.title, str.swapcase]),
    pad=st.sampled_from(["", " ", "\t", " \n "]),
)
def test_any_spelling_of_an_email_gives_one_identifier(local, domain_name, case, pad) -> None:
    canonical = f"{local}@{domain_name}"
    assert domain.normalise_email(f"{pad}{case(canonical)}{pad}") == Ident("email", canonical)


def test_external_ids_are_per_channel() -> None:
    a = domain.normalise_external("chat", " u-1 ")
    b = domain.normalise_external("social", "u-1")
    assert a.value == b.value == "u-1"
    assert a.key != b.key


def test_a_channel_signed_reference_is_checked_against_its_identifiers() -> None:
    # What a widget's back end computes: the identifiers' keys and the id, sorted, one per line.
    signed = hmac.new(b"s3cret", b"email:ann@example.com\nid:c-1", hashlib.sha256).hexdigest()
    assert domain.identity_hash("s3cret", "c-1", [EMAIL]) == signed
    domain.check_identity_hash({"web": "s3cret"}, "web", "c-1", [EMAIL], signed.upper())  # hex in any case
    for secrets, channel, cid, idents, reason in [
        ({"web": "s3cret"}, "web", "c-1", [EMAIL, PHONE], "does not match"),  # an identifier added
        ({"web": "s3cret"}, "web", "c-2", [EMAIL], "does not match"),  # another customer
        ({"web": "other"}, "web", "c-1", [EMAIL], "does not match"),  # another secret
        ({"web": "s3cret"}, "chat", "c-1", [EMAIL], "no identity secret"),  # another channel's secret
    ]:
        with pytest.raises(InvalidInput) as info:
            domain.check_identity_hash(secrets, channel, cid, idents, signed)
        assert info.value.field == "customer.identity_hash" and reason in info.value.reason
