"""Which signed-in account gets which organiser and role (admin.accounts): what each provider's ID token
can be trusted for, the most specific rule wins, and the rules that may not be made."""

from __future__ import annotations

import pytest

from skolsynk_services.admin.accounts import (
    AccountRule,
    RuleKind,
    RuleRefused,
    SignedInAccount,
    account_of,
    check_rule,
    choose_rule,
    normalise_value,
)
from skolsynk_services.admin.auth import Role
from skolsynk_services.admin.oidc import ProviderKind

pytestmark = pytest.mark.unit

ALVIK_DIRECTORY = "11111111-2222-3333-4444-555555555555"
OTHER_DIRECTORY = "99999999-8888-7777-6666-555555555555"


def rule(kind: str, value: str, role: str = "viewer", *, tenant: str | None = "alvik", provider: str = "microsoft",
         directory: str | None = None, rule_id: str | None = None) -> AccountRule:  # fmt: skip
    return AccountRule(rule_id or f"{provider}-{kind}-{value}-{directory}", provider, RuleKind(kind), value, directory,
                       Role(role), tenant)  # fmt: skip


ANNA = SignedInAccount("microsoft", "sub-anna", "anna@alvik.se", "alvik.se", ALVIK_DIRECTORY)


def test_the_most_specific_rule_wins_subject_then_email_then_domain() -> None:
    domain = rule("domain", "alvik.se", "viewer")
    email = rule("email", "anna@alvik.se", "organiser_admin")
    subject = rule("subject", "sub-anna", "organiser_admin", tenant="bromma")
    assert choose_rule(ANNA, [domain]) == domain
    assert choose_rule(ANNA, [domain, email]) == email
    assert choose_rule(ANNA, [subject, domain, email]) == subject
    # Someone else at the domain gets the domain's rule, not Anna's.
    bertil = SignedInAccount("microsoft", "sub-bertil", "bertil@alvik.se", "alvik.se", ALVIK_DIRECTORY)
    assert choose_rule(bertil, [subject, domain, email]) == domain


def test_a_rule_bound_to_the_accounts_directory_beats_one_that_is_not() -> None:
    anywhere = rule("domain", "alvik.se", "viewer")
    bound = rule("domain", "alvik.se", "organiser_admin", directory=ALVIK_DIRECTORY)
    elsewhere = rule("domain", "alvik.se", "organiser_admin", directory=OTHER_DIRECTORY, tenant="bromma")
    assert choose_rule(ANNA, [anywhere, elsewhere, bound]) == bound
    assert choose_rule(ANNA, [elsewhere]) is None  # another directory's rule never matches


def test_an_account_no_rule_matches_is_refused() -> None:
    stranger = SignedInAccount("microsoft", "sub-eve", "eve@elsewhere.example", "elsewhere.example", OTHER_DIRECTORY)
    rules = [rule("domain", "alvik.se"), rule("email", "anna@alvik.se"), rule("subject", "sub-anna")]
    assert choose_rule(stranger, rules) is None
    assert choose_rule(ANNA, [rule("domain", "alvik.se", provider="google")]) is None  # another provider's rule
    assert choose_rule(ANNA, []) is None


def test_an_account_without_a_trusted_address_matches_only_by_subject() -> None:
    anonymous = SignedInAccount("oidc", "sub-x")
    assert choose_rule(anonymous, [rule("domain", "alvik.se", provider="oidc")]) is None
    by_subject = rule("subject", "sub-x", provider="oidc")
    assert choose_rule(anonymous, [by_subject]) == by_subject
    assert anonymous.name == "oidc:sub-x"
    assert ANNA.name == "anna@alvik.se"


def test_a_domain_of_operators_never_matches_even_if_stored() -> None:
    stored = rule("domain", "alvik.se", "operator", tenant=None)
    assert choose_rule(ANNA, [stored]) is None
    one = rule("email", "anna@alvik.se", "operator", tenant=None)
    assert choose_rule(ANNA, [stored, one]) == one


def test_google_trusts_a_verified_address_and_only_the_workspace_domain() -> None:
    claims = {"sub": "1", "email": "Anna@Alvik.se", "email_verified": True, "hd": "alvik.se"}
    workspace = account_of("google", ProviderKind.GOOGLE, claims)
    assert (workspace.email, workspace.domain) == ("anna@alvik.se", "alvik.se")
    # A personal Google account with a verified address at the organiser's domain is not of its Workspace.
    personal = account_of("google", ProviderKind.GOOGLE, {"sub": "2", "email": "anna@alvik.se", "email_verified": True})
    assert (personal.email, personal.domain) == ("anna@alvik.se", None)
    assert choose_rule(personal, [rule("domain", "alvik.se", provider="google")]) is None
    unverified = account_of("google", ProviderKind.GOOGLE, {"sub": "3", "email": "anna@alvik.se", "hd": "alvik.se"})
    assert (unverified.email, unverified.domain) == (None, "alvik.se")


def test_microsoft_names_the_directory_and_falls_back_to_the_user_principal_name() -> None:
    claims = {"sub": "s", "tid": ALVIK_DIRECTORY, "preferred_username": "Anna@alvik.se", "name": "Anna"}
    account = account_of("microsoft", ProviderKind.MICROSOFT, claims)
    assert account == SignedInAccount("microsoft", "s", "anna@alvik.se", "alvik.se", ALVIK_DIRECTORY)
    with_email = account_of("microsoft", ProviderKind.MICROSOFT, {**claims, "email": "a.alvik@alvik.se"})
    assert with_email.email == "a.alvik@alvik.se"
    not_an_address = account_of("microsoft", ProviderKind.MICROSOFT, {"sub": "s", "preferred_username": "anna"})
    assert (not_an_address.email, not_an_address.domain) == (None, None)


def test_any_other_provider_trusts_only_a_verified_address() -> None:
    verified = account_of("oidc", ProviderKind.OIDC, {"sub": "s", "email": "anna@alvik.se", "email_verified": True})
    assert (verified.email, verified.domain) == ("anna@alvik.se", "alvik.se")
    claimed = account_of("oidc", ProviderKind.OIDC, {"sub": "s", "email": "anna@alvik.se"})
    assert (claimed.email, claimed.domain) == (None, None)


def test_values_are_compared_as_normalised() -> None:
    assert normalise_value(RuleKind.EMAIL, " Anna@Alvik.SE ") == "anna@alvik.se"
    assert normalise_value(RuleKind.DOMAIN, "@Alvik.se") == "alvik.se"
    assert normalise_value(RuleKind.SUBJECT, " AbC-123 ") == "AbC-123"  # a subject is case-sensitive
    wrong = [(RuleKind.EMAIL, "anna", "email"), (RuleKind.DOMAIN, "alvik", "domain"),
             (RuleKind.DOMAIN, "anna@alvik.se", "domain"), (RuleKind.SUBJECT, " ", "subject")]  # fmt: skip
    for kind, value, code in wrong:
        with pytest.raises(RuleRefused) as refused:
            normalise_value(kind, value)
        assert (refused.value.field, refused.value.code) == ("value", code)


@pytest.mark.parametrize(
    ("kind", "role", "tenant", "directory", "multi", "code"),
    [
        (RuleKind.DOMAIN, Role.OPERATOR, None, None, False, "operator_domain"),
        (RuleKind.EMAIL, Role.OPERATOR, "alvik", None, False, "operator_tenant"),
        (RuleKind.EMAIL, Role.VIEWER, None, None, False, "tenant_required"),
        (RuleKind.DOMAIN, Role.VIEWER, "alvik", None, True, "directory_required"),
        (RuleKind.EMAIL, Role.ORGANISER_ADMIN, "alvik", None, True, "directory_required"),
        (RuleKind.DOMAIN, Role.VIEWER, "alvik", "alvik", False, "directory"),
    ],
)
def test_rules_that_may_not_be_made(
    kind: RuleKind, role: Role, tenant: str | None, directory: str | None, multi: bool, code: str
) -> None:
    with pytest.raises(RuleRefused) as refused:
        check_rule(kind, role, tenant, directory, multi=multi)
    assert refused.value.code == code


def test_rules_that_may_be_made() -> None:
    check_rule(RuleKind.SUBJECT, Role.OPERATOR, None, None, multi=True)
    check_rule(RuleKind.EMAIL, Role.OPERATOR, None, None, multi=False)
    check_rule(RuleKind.DOMAIN, Role.VIEWER, "alvik", ALVIK_DIRECTORY, multi=True)
    check_rule(RuleKind.DOMAIN, Role.ORGANISER_ADMIN, "alvik", None, multi=False)
