"""``skolsynk explain`` as plain text: one person's explanation (:class:`skolsynk.explain.PersonExplanation`)
in sections, each verdict with its reason codes and their parameters (the admin UI words them in Swedish)."""

from __future__ import annotations

from typing import TextIO

from skolsynk.cli import output
from skolsynk.domain.verdicts import Reason
from skolsynk.explain import PersonExplanation


def reason_text(reason: Reason) -> str:
    """``unit_not_chosen (unit=Granmoskolan, unit_code=12345678, relation=enrolment, role=student)``."""
    params = [
        f"{name}={','.join(value) if isinstance(value, list) else value}"
        for name, value in reason.params.items()
        if value is not None
    ]
    return f"{reason.code.value} ({', '.join(params)})" if params else reason.code.value


def write_text(explanation: PersonExplanation, *, out: TextIO) -> None:
    person = explanation.person
    out.write(f"Person {explanation.person_id} of {explanation.tenant_id} ({explanation.today})\n")
    if person is None:
        out.write("  in no source (any more)\n")
    else:
        out.write(f"  {person.given_name} {person.family_name}, source {person.source_id}, key {person.key}\n")
        out.write(f"  logins: {', '.join(person.logins) or '-'}; e-mail: {', '.join(person.emails) or '-'}\n")
        marking = person.security_marking or "not given"
        out.write(f"  personStatus: {person.person_status or 'unknown'}; securityMarking: {marking}\n")
    out.write("\nVendors\n")
    output.table(
        ("vendor", "verdict", "test mode", "reasons"),
        [
            (v.vendor_id, v.verdict.value, v.test_mode, "; ".join(reason_text(r) for r in v.reasons))
            for v in explanation.verdicts
        ],
        out=out,
    )
    out.write("\nSource records\n")
    output.table(
        ("source", "kind", "key", "changed", "source complete"),
        [(r.source_id, r.kind, r.key, r.changed_at, r.source_complete_at) for r in explanation.records],
        out=out,
    )
    out.write("\nRelations\n")
    output.table(
        ("relation", "role", "school unit", "code", "type", "year", "from", "to", "active"),
        [
            (
                r.relation,
                r.role,
                r.school_unit,
                r.school_unit_code,
                r.school_type,
                r.school_year,
                r.start_date,
                r.end_date,
                r.active,
            )
            for r in explanation.relations
        ],
        out=out,
    )
    out.write("\nGroups\n")
    output.table(
        ("group", "type", "school unit", "active"),
        [(g.display_name, g.group_type, g.school_unit or g.school_unit_code, g.active) for g in explanation.groups],
        out=out,
    )
    out.write("\nData-quality findings\n")
    output.table(
        ("severity", "code", "kind", "field", "detail"),
        [(f.severity, f.code, f.entity_kind, f.field, f.detail or None) for f in explanation.findings],
        out=out,
    )
    out.write("\nDeliveries (the delivery ledger)\n")
    output.table(
        ("vendor", "kind", "operation", "version", "status", "at", "reason"),
        [(d.vendor_id, d.kind, d.operation, d.version, d.status, d.at, d.reason) for d in explanation.deliveries],
        out=out,
    )
    out.write("\nDeletions (the erasure ledger)\n")
    output.table(
        ("vendor", "reason", "requested", "status", "receipt", "delivered"),
        [(d.vendor_id, d.reason, d.requested_at, d.status, d.outcome, d.delivered_at) for d in explanation.deletions],
        out=out,
    )
    out.write("\nErasure requests and objections\n")
    output.table(
        ("request", "kind", "status", "requested", "vendors", "receipts"),
        [
            (
                r.request_id,
                r.kind,
                r.status,
                r.requested_at,
                "all" if r.vendor_ids is None else ",".join(r.vendor_ids),
                "; ".join(f"{x.vendor_id}: {x.status}" + (f" {x.outcome}" if x.outcome else "") for x in r.receipts)
                or None,
            )
            for r in explanation.requests
        ],
        out=out,
    )
