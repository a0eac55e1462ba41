"""A subscription's verdict on a person in Swedish, from its code and reasons (``skolsynk.domain.verdicts``)
and the catalogue's section ``person``: one sentence ("Skickas inte till NE: Granmoskolan ingår inte i
urvalet", "Skickas till NE (testläge: skickas inte på riktigt)") and every reason on its own."""

from __future__ import annotations

from skolsynk.domain.verdicts import NOTES, Param, Reason, ReasonCode, VendorVerdict
from skolsynk_services.admin.ui.catalogue import text
from skolsynk_services.admin.ui.formatting import when

#: Reasons that say the person is in the selection: in the list of reasons, not in the verdict's sentence.
IN_SELECTION = frozenset({ReasonCode.SELECTED, ReasonCode.INCLUDED})


def _role(role: Param) -> str:
    return text(f"person.roles.{role}") if isinstance(role, str) else text("person.unknown")


def _values(reason: Reason) -> dict[str, str]:
    """The reason's parameters as the Swedish sentence names them."""
    params = reason.params
    values = {
        name: "" if value is None else str(value) for name, value in params.items() if not isinstance(value, list)
    }
    values["unit"] = str(params.get("unit") or params.get("unit_code") or text("person.unknown_unit"))
    if "role" in params:
        values["role"] = _role(params["role"])
    roles, units = params.get("roles"), params.get("units")
    if isinstance(roles, list):
        values["roles"] = text("person.and").join(_role(r) for r in roles) or text("person.unknown")
    if isinstance(units, list):
        values["units"] = ", ".join(units) or text("person.unknown_unit")
    if isinstance(params.get("relation"), str):
        values["relation"] = text(f"person.relations.{params['relation']}")
    if "until" in params:
        values["until"] = when(params["until"])
    if "person_status" in params and params["person_status"] is None:
        values["person_status"] = text("person.unknown_status")
    return values


def reason_text(reason: Reason) -> str:
    """One reason as a phrase ("Granmoskolan ingår inte i urvalet")."""
    return text(f"person.reasons.{reason.code.value}", **_values(reason))


def sentence(verdict: VendorVerdict, vendor: str) -> str:
    """The verdict in one sentence: what happens, why, and (in parentheses) what adds to it."""
    said = text(f"person.verdicts.{verdict.verdict.value}", vendor=vendor)
    why = [reason_text(r) for r in verdict.reasons if r.code not in NOTES and r.code not in IN_SELECTION]
    notes = [reason_text(r) for r in verdict.reasons if r.code in NOTES]
    if why:
        said += ": " + "; ".join(why)
    if notes:
        said += " (" + "; ".join(notes) + ")"
    return said


def reasons(verdict: VendorVerdict) -> list[str]:
    """Every reason as a sentence of its own (first letter in capitals)."""
    return [_capital(reason_text(r)) for r in verdict.reasons]


def _capital(phrase: str) -> str:
    return phrase[:1].upper() + phrase[1:]
