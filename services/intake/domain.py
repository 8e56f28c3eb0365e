"""Intake's rules: pure functions and in-memory decisions, no I/O.

- Identifiers are normalised (email case and spaces, phones to E.164, external ids per channel).
- Identity resolution: the identifiers (and customer id) of one request name zero customers
  (create one), one (that's them; link any new identifiers) or several (merge them into the
  oldest, one `crm.customer.merged.v1` per merged customer). Nothing is rewritten silently.
- Identity trust (docs/product.md §14, docs/identity-trust.md): a request from a key that may not verify
  identities only claims. Its new identifiers are linked as claimed, and where it names several
  customers none is merged: each other one becomes a merge suggestion an agent decides.
- An accepted interaction becomes `crm.interaction.recorded.v1` on the survivor.
"""

import functools
import hashlib
import hmac
import re
import unicodedata
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final, Literal

import email_validator
import phonenumbers

from contracts.events import (
    Channel,
    ConsentChanged,
    CustomerCreated,
    CustomerMerged,
    Direction,
    Identifier,
    IdentifierKind,
    IdentifiersAdded,
    IdentifiersVerified,
    InteractionKind,
    InteractionRecorded,
    MergeSuggested,
    MergeSuggestionDecided,
    Preferences,
    PreferencesChanged,
    ProfileChanged,
    Trust,
)

CLAIMED: Final = "claimed"
VERIFIED: Final = "verified"
VerifiedBy = Literal["agent", "key"]  # who verified identifiers: an agent, or a verifying key
SuggestionDecision = Literal["accepted", "rejected"]
MAX_CLOCK_SKEW = timedelta(minutes=5)
MAX_CONTENT_CHARS = 10_000


class InvalidInput(ValueError):
    """A command that breaks a rule; `field` and `reason` go back to the caller (errors.py says how)."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class TooLarge(InvalidInput):
    """Input larger than intake keeps (an interaction's content)."""


# --- identifiers ---------------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class Ident:
    """A normalised identifier. `key` is what makes two identifiers the same."""

    kind: IdentifierKind
    value: str
    channel: Channel | None = None  # whose id an external one is

    @property
    def key(self) -> str:
        if self.kind == "external":
            return f"external:{self.channel}:{self.value}"
        return f"{self.kind}:{self.value}"

    def to_contract(self) -> Identifier:
        return Identifier(kind=self.kind, value=self.value, channel=self.channel)


def normalise_email(raw: str, field: str = "customer.email") -> Ident:
    """One address, one spelling: checked and normalised by email-validator (syntax only, no DNS),
    so `a()@x.io`, control characters and NUL are refused and a Unicode domain and its IDNA form
    are the same identity (kept in the IDNA form); then lower-cased whole, as identities always were."""
    email, problem = _checked_email(raw.strip(" \t\r\n"))  # pasted with a line end or spaces around
    if problem:
        raise InvalidInput(field, f"not an email address: {problem}")
    return Ident("email", email)


# (the normalised address, "") or ("", why it is not one). Customers write again and again, and
# email-validator is costly per address (BENCHMARKS.md): the last 16,384 answers are kept (a few
# MiB at most: an input is at most 320 characters).
@functools.lru_cache(maxsize=16_384)
def _checked_email(text: str) -> tuple[str, str]:
    if any(unicodedata.category(c) in ("Cc", "Cs") for c in text):
        return "", "it contains control characters"
    try:
        checked = email_validator.validate_email(text, check_deliverability=False)
    except email_validator.EmailNotValidError as exc:
        return "", str(exc)
    # The ASCII (IDNA) spelling where there is one: what mail servers take without SMTPUTF8.
    email = (checked.ascii_email or checked.normalized).lower()
    if len(email) > 254:
        return "", "longer than 254 characters"
    return email, ""


def normalise_phone(raw: str, default_region: str, field: str = "customer.phone") -> Ident:
    """E.164; numbers without a leading + are read in the default region."""
    try:
        number = phonenumbers.parse(raw, default_region)
    except phonenumbers.NumberParseException as exc:
        raise InvalidInput(field, "not a phone number") from exc
    if not phonenumbers.is_valid_number(number):
        raise InvalidInput(field, "not a valid phone number")
    return Ident("phone", phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))


def normalise_external(channel: Channel, raw: str, field: str = "customer.external") -> Ident:
    value = raw.strip()
    if not value or len(value) > 200:
        raise InvalidInput(field, "external id must be 1 to 200 characters")
    return Ident("external", value, channel)


# --- identity resolution --------------------------------------------------------------------


@dataclass
class IdentitySnapshot:
    """What the database knows about the identifiers and customers one request (or batch) names.

    Invariants kept by the store: identifiers point at live (unmerged) customers, and
    merged_into always points at the final survivor.
    """

    owner: dict[str, str] = field(default_factory=dict)  # Ident.key -> customer id
    trust: dict[str, Trust] = field(default_factory=dict)  # Ident.key -> CLAIMED | VERIFIED
    merged_into: dict[str, str] = field(default_factory=dict)  # merged id -> survivor id
    created: dict[str, datetime] = field(default_factory=dict)  # live customers named so far

    def find(self, customer_id: str) -> str:
        while customer_id in self.merged_into:
            customer_id = self.merged_into[customer_id]
        return customer_id


@dataclass(frozen=True)
class Merge:
    survivor_id: str
    merged_id: str
    linked_by: Ident


@dataclass(frozen=True)
class Suggestion:
    """Claimed identifiers named two customers: they may be one person; an agent decides."""

    survivor_id: str  # the older record, who would survive the merge
    merged_id: str
    linked_by: Ident

    @property
    def pair(self) -> tuple[str, str]:
        return min(self.survivor_id, self.merged_id), max(self.survivor_id, self.merged_id)


@dataclass(frozen=True)
class Resolution:
    customer_id: str
    created: tuple[Ident, ...] | None  # the identifiers of a customer created now, else None
    merges: tuple[Merge, ...]
    added: tuple[Ident, ...]  # identifiers newly linked to an existing customer
    trust: Trust = VERIFIED  # of the identifiers created or added now
    suggestions: tuple[Suggestion, ...] = ()  # claims that named other customers: no merge
    verified: tuple[Ident, ...] = ()  # claimed identifiers of the customer that a verifying request named


class IdentityResolver:
    """Decides who a request is about. Updates the snapshot, so later items of a batch see
    the customers and merges that earlier items decided."""

    def __init__(self, snapshot: IdentitySnapshot, now: datetime, new_id: Callable[[], str]) -> None:
        self.snapshot = snapshot
        self.now = now
        self.new_id = new_id

    def resolve(self, customer_id: str | None, idents: Iterable[Ident], verified: bool = False) -> Resolution:
        """`verified`: the request comes from a key allowed to verify identities. Without it the
        identifiers are claims: linked as claimed, never merging, never upgrading trust.

        Even a verifying request only vouches for the person it speaks for, not for links others
        claimed: a customer it names only through an identifier claimed on that customer is not
        merged or upgraded (a suggestion at most), or a claim followed by a verified post of the
        same address would hand the customer to whoever made the claim."""
        s = self.snapshot
        trust: Trust = VERIFIED if verified else CLAIMED
        idents = list(dict.fromkeys(idents))
        named: list[str] = []  # live customers this request names, in order
        proven: list[str] = []  # of those, the ones named by id or by a verified identifier
        linked_by: dict[str, Ident] = {}
        if customer_id is not None:
            live = s.find(customer_id)
            if live not in s.created:
                raise InvalidInput("customer.id", "unknown customer")
            named.append(live)
            proven.append(live)
        for ident in idents:
            if ident.key in s.owner:
                owner = s.find(s.owner[ident.key])
                if owner not in named:
                    named.append(owner)
                if s.trust.get(ident.key, VERIFIED) == VERIFIED and owner not in proven:
                    proven.append(owner)
                linked_by.setdefault(owner, ident)
        if not named:
            new = self.new_id()
            s.created[new] = self.now
            for ident in idents:
                s.owner[ident.key] = new
                s.trust[ident.key] = trust
            return Resolution(new, tuple(idents), (), (), trust)
        if not verified or not proven:
            return self._claim(named, linked_by, idents, customer_id is not None)

        survivor = min(proven, key=lambda c: (s.created[c], c))  # the oldest record survives
        merges = []
        for other in proven:
            if other == survivor:
                continue
            # Name the identifier that tied them: the merged one's, else the survivor's.
            tie = linked_by.get(other) or linked_by[survivor]
            merges.append(Merge(survivor, other, tie))
            s.merged_into[other] = survivor
            del s.created[other]
        suggestions = []
        for other in named:
            if other not in proven:  # named only by what was claimed on it
                older, younger = sorted((survivor, other), key=lambda c: (s.created[c], c))
                suggestions.append(Suggestion(older, younger, linked_by[other]))
        added = tuple(i for i in idents if i.key not in s.owner)
        for ident in added:
            s.owner[ident.key] = survivor
            s.trust[ident.key] = VERIFIED
        upgraded = tuple(
            i for i in idents
            if i not in added and s.trust.get(i.key) == CLAIMED and s.find(s.owner[i.key]) == survivor
        )  # fmt: skip
        for ident in upgraded:
            s.trust[ident.key] = VERIFIED
        return Resolution(survivor, None, tuple(merges), added, VERIFIED, tuple(suggestions), upgraded)

    def _claim(self, named: list[str], linked_by: dict[str, Ident], idents: list[Ident], by_id: bool) -> Resolution:
        """A claim that names customers: the interaction goes to the customer the request names by
        id (else the oldest named); every other named customer becomes a suggestion, never a merge."""
        s = self.snapshot
        target = named[0] if by_id else min(named, key=lambda c: (s.created[c], c))
        suggestions = []
        for other in named:
            if other == target:
                continue
            older, younger = sorted((target, other), key=lambda c: (s.created[c], c))
            # The identifier that named the other customer (the target may be named by id alone).
            tie = linked_by.get(other) or linked_by[target]
            suggestions.append(Suggestion(older, younger, tie))
        added = tuple(i for i in idents if i.key not in s.owner)
        for ident in added:
            s.owner[ident.key] = target
            s.trust[ident.key] = CLAIMED
        return Resolution(target, None, (), added, CLAIMED, tuple(suggestions))


def identity_hash(secret: str, customer_id: str | None, idents: Iterable[Ident]) -> str:
    """What a channel's own back end signs to vouch for a customer reference (as chat widgets'
    identity verification does): HMAC-SHA256, hex, under the channel's identity secret, of the
    reference's normalised identifiers as keys ("email:ann@example.com", "phone:+14155552671",
    "external:chat:u-42") and "id:<customer id>" if it names one, sorted, joined by newlines."""
    lines = sorted({i.key for i in idents} | ({f"id:{customer_id}"} if customer_id else set()))
    return hmac.new(secret.encode(), "\n".join(lines).encode(), hashlib.sha256).hexdigest()


def check_identity_hash(
    secrets: Mapping[str, str], channel: str, customer_id: str | None, idents: Iterable[Ident], given: str
) -> None:
    """A reference signed by the channel's back end is verified; a wrong signature is refused,
    never read as a claim, so a broken signer shows at once."""
    secret = secrets.get(channel)
    if not secret:
        raise InvalidInput("customer.identity_hash", f"channel {channel} has no identity secret")
    if not hmac.compare_digest(identity_hash(secret, customer_id, idents), given.lower()):
        raise InvalidInput("customer.identity_hash", "does not match the customer reference")


def merged_consent(
    survivor: dict[tuple[str, str], bool], merged: dict[tuple[str, str], bool]
) -> dict[tuple[str, str], bool]:
    """Consent after a merge: the most restrictive answer wins, and no answer is lost.

    Returns only the (purpose, channel) entries of the survivor that change.
    """
    changes: dict[tuple[str, str], bool] = {}
    for key, granted in merged.items():
        current = survivor.get(key)
        if current is None or (current and not granted):
            changes[key] = granted if current is None else False
    return changes


# --- commands and their events ---------------------------------------------------------------


@dataclass(frozen=True)
class RecordInteraction:
    channel: Channel
    direction: Direction
    kind: InteractionKind
    occurred_at: datetime
    customer_id: str | None = None
    identifiers: tuple[Ident, ...] = ()
    content: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    verified: bool = False  # from a key allowed to verify identities (identity:verify, admin)


def check_interaction(cmd: RecordInteraction, now: datetime) -> None:
    if cmd.occurred_at - now > MAX_CLOCK_SKEW:
        raise InvalidInput("occurred_at", "more than 5 minutes in the future")
    if cmd.content is not None and len(cmd.content) > MAX_CONTENT_CHARS:
        raise TooLarge("content", f"longer than {MAX_CONTENT_CHARS} characters")
    if cmd.customer_id is None and not cmd.identifiers:
        raise InvalidInput("customer", "give a customer id or at least one identifier")


def new_customer_id() -> str:
    return str(uuid.uuid4())


def used_themselves(direction: str, created: Iterable[Ident]) -> bool:
    """Did the customer use the address they were created with themselves? Only an inbound
    interaction naming a single address (email or phone) says so: with two, a claim could put an
    address of the claimant's beside the customer's own, and the customer's messages would reach it."""
    return direction == "inbound" and sum(i.kind in ("email", "phone") for i in created) == 1


def customer_created(
    customer_id: str, idents: Iterable[Ident], trust: Trust = VERIFIED, inbound: bool = False
) -> dict[str, Any]:
    data = CustomerCreated(
        customer_id=customer_id,
        identifiers=[i.to_contract() for i in idents],
        trust=trust,
        inbound=inbound,
    )
    return data.model_dump(mode="json")


def identifiers_added(customer_id: str, idents: Iterable[Ident], trust: Trust = VERIFIED) -> dict[str, Any]:
    data = IdentifiersAdded(
        customer_id=customer_id,
        identifiers=[i.to_contract() for i in idents],
        trust=trust,
    )
    return data.model_dump(mode="json")


def identifiers_verified(customer_id: str, idents: Iterable[Ident], by: VerifiedBy) -> dict[str, Any]:
    data = IdentifiersVerified(
        customer_id=customer_id,
        identifiers=[i.to_contract() for i in idents],
        by=by,
    )
    return data.model_dump(mode="json")


def merge_suggested(suggestion_id: str, customer_id: str, suggestion: Suggestion) -> dict[str, Any]:
    data = MergeSuggested(
        suggestion_id=suggestion_id,
        customer_id=customer_id,
        survivor_id=suggestion.survivor_id,
        merged_id=suggestion.merged_id,
        linked_by=suggestion.linked_by.to_contract(),
        reason="identifiers claimed together belong to two customers",
    )
    return data.model_dump(mode="json")


def merge_suggestion_decided(
    suggestion_id: str,
    customer_id: str,
    survivor_id: str,
    merged_id: str,
    decision: SuggestionDecision,
    decided_by: str,
) -> dict[str, Any]:
    data = MergeSuggestionDecided(
        suggestion_id=suggestion_id,
        customer_id=customer_id,
        survivor_id=survivor_id,
        merged_id=merged_id,
        decision=decision,
        decided_by=decided_by,
    )
    return data.model_dump(mode="json")


def customer_merged(merge: Merge, reason: str = "identifiers given together belong to two customers") -> dict[str, Any]:
    data = CustomerMerged(
        survivor_id=merge.survivor_id,
        merged_id=merge.merged_id,
        linked_by=merge.linked_by.to_contract(),
        reason=reason,
    )
    return data.model_dump(mode="json")


def interaction_recorded(customer_id: str, cmd: RecordInteraction) -> dict[str, Any]:
    data = InteractionRecorded(
        customer_id=customer_id,
        channel=cmd.channel,
        direction=cmd.direction,
        kind=cmd.kind,
        occurred_at=cmd.occurred_at,
        content=cmd.content,
        metadata=cmd.metadata,
    )
    return data.model_dump(mode="json")


def consent_changed(
    customer_id: str, purpose: str, channel: str | None, granted: bool, merged_from: str | None = None
) -> dict[str, Any]:
    """Purpose and channel come back from the consent table as text: the contract checks them.
    `merged_from`: the merged customer a merge carried this answer over from."""
    data = ConsentChanged.model_validate(
        {"customer_id": customer_id, "purpose": purpose, "channel": channel, "granted": granted}
        | ({"merged_from": merged_from} if merged_from else {})
    )
    out = data.model_dump(mode="json")
    if merged_from is None:
        del out["merged_from"]  # an answer of the customer's own: as before the field existed
    return out


def preferences_changed(customer_id: str, old: Preferences, new: Preferences) -> dict[str, Any] | None:
    """The event for a change of preferences, or None when nothing changed."""
    changed = [name for name in Preferences.model_fields if getattr(old, name) != getattr(new, name)]
    if not changed:
        return None
    return PreferencesChanged(customer_id=customer_id, preferences=new, changed=changed).model_dump(mode="json")


def check_time_zone(name: str, field: str) -> None:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise InvalidInput(field, "unknown time zone") from exc


# --- the display name ----------------------------------------------------------------------

MAX_NAME_CHARS = 200
_NAME_TOKEN = re.compile(r"\w+")


def normalise_name(raw: str | None, field: str = "name") -> str | None:
    """The name as shown: NFC, runs of white space made one space; empty means no name."""
    if raw is None:
        return None
    name = " ".join(unicodedata.normalize("NFC", raw).split())
    if any(unicodedata.category(c).startswith("C") for c in name):
        raise InvalidInput(field, "control characters are not allowed in a name")
    if len(name) > MAX_NAME_CHARS:
        raise InvalidInput(field, f"longer than {MAX_NAME_CHARS} characters")
    return name or None


def name_tokens(text: str) -> list[str]:
    """What name search matches on: each word, case-folded (NFKC), so "ADA" finds "Ada Lovelace".

    Exact words only: no prefixes, no fuzzy or accent-insensitive matching."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    return sorted(set(_NAME_TOKEN.findall(folded)))


def profile_changed(customer_id: str, old_name: str | None, new_name: str | None) -> dict[str, Any] | None:
    """The event for a change of profile, or None when nothing changed."""
    if old_name == new_name:
        return None
    return ProfileChanged(customer_id=customer_id, name=new_name, changed=["name"]).model_dump(mode="json")
