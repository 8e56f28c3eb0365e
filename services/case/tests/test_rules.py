"""Which interactions open or join a case, the VIP priority floor, survey scores."""

import pytest

from case import rules
from case.tests.support import RULES, new_case, utc


@pytest.mark.parametrize(
    ("asked", "vip", "gets"),
    [
        ("low", False, "low"),
        ("normal", False, "normal"),
        ("low", True, "high"),
        ("normal", True, "high"),
        ("high", True, "high"),
        ("urgent", True, "urgent"),
    ],
)
def test_vip_customers_get_at_least_high(asked: str, vip: bool, gets: str) -> None:
    assert rules.effective_priority(asked, vip) == gets
    assert new_case(utc(2026, 1, 5, 9), priority=asked, vip=vip).priority == gets


def test_rules_open_cases_for_inbound_complaints_and_requests_only() -> None:
    assert rules.opening_rule(RULES, "complaint", "inbound", {}) == rules.OpenRule("complaint")
    assert rules.opening_rule(RULES, "request", "inbound", {}) == rules.OpenRule("request")
    assert rules.opening_rule(RULES, "request", "inbound", {"case_type": "repair"}) == rules.OpenRule("repair")
    assert rules.opening_rule(RULES, "request", "inbound", {"case_type": "nonsense"}) == rules.OpenRule("request")
    assert rules.opening_rule(RULES, "complaint", "outbound", {}) is None
    assert rules.opening_rule(RULES, "message", "inbound", {}) is None
    custom = rules.CaseRules(open_on={"call": rules.OpenRule("inquiry", "low", "phone-desk")})
    assert rules.opening_rule(custom, "call", "inbound", {}) == rules.OpenRule("inquiry", "low", "phone-desk")
    assert rules.opening_rule(custom, "complaint", "inbound", {}) is None


def test_the_same_interaction_always_names_the_same_case() -> None:
    assert rules.case_id_for("ev-1") == rules.case_id_for("ev-1") != rules.case_id_for("ev-2")


@pytest.mark.parametrize(
    ("metadata", "content", "score"),
    [
        ({"score": 9}, None, 9),
        ({"score": "4"}, None, 4),
        ({}, " 7 ", 7),
        ({}, "great", None),
        ({"score": 11}, None, None),
    ],
)
def test_survey_scores(metadata: dict, content: str | None, score: int | None) -> None:
    assert rules.survey_score(metadata, content) == score
