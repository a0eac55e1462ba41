"""The admin UI's Swedish wording of the connectors' source-run error hints."""

from __future__ import annotations

import pytest

from skolsynk.domain.source_errors import HINTS_BY_SOURCE_KIND
from skolsynk_services.admin.ui.texts import SOURCE_ERROR_TEXTS, flat_settings, source_error_hint

pytestmark = pytest.mark.unit


def test_every_source_error_hint_has_a_swedish_text() -> None:
    missing = [
        f"{kind}:{reason}"
        for kind, hints in HINTS_BY_SOURCE_KIND.items()
        for reason, hint in hints.items()
        if hint not in SOURCE_ERROR_TEXTS
    ]
    assert not missing, "add these (or their changed English hint) to SOURCE_ERROR_TEXTS in admin/ui/texts.py"


def test_a_code_is_looked_up_by_its_reason_and_a_code_without_a_hint_has_none() -> None:
    hint = source_error_hint("google", "users:quota_exceeded")
    assert hint is not None
    assert hint.title == "Google begränsade läsningarna gång på gång"
    assert not hint.needs_admin
    hint = source_error_hint("microsoft", "token:invalid_client")
    assert hint is not None
    assert "klienthemlighet" in hint.fix
    assert hint.needs_admin
    assert source_error_hint("google", "users:something_new") is None
    assert source_error_hint("egil", "timeout") is None
    assert source_error_hint(None, "timeout") is None


def test_an_egil_clients_certificates_are_counted_in_the_settings_summary_not_shown_whole() -> None:
    pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    lines = flat_settings({"api_key_sha256": "ab" * 32, "client_certificates": [pem, pem]})
    assert lines == [("API-nyckel", "finns"), ("Klientcertifikat", "2")]
