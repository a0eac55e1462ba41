"""The bootstrap operator token (issue 19): strong or refused at start, registered once, and a revoked one
stays revoked across restarts (it used to come back on every admin start)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from skolsynk.settings import ServiceSettings
from skolsynk_services.admin.app import AdminSettings
from skolsynk_services.admin.app import build as build_admin
from skolsynk_services.admin.auth import TokenStore
from tests.helpers import delete_topology

pytestmark = pytest.mark.connected

TOKEN = "skt_ops1234." + "s" * 40


def admin_settings(settings: ServiceSettings, token: str) -> AdminSettings:
    return AdminSettings.model_validate(
        {
            **settings.model_dump(),
            "admin_port": 0,
            "admin_host": "127.0.0.1",
            "vendor_catalogue_dir": None,
            "admin_bootstrap_token": token,
        }
    )


@pytest.mark.parametrize(
    "weak", ["skt_x.1", "skt_ops1234.short-secret", "skt_OPS.", "not-a-token", "skt_a." + "s" * 40]
)
def test_a_weak_or_malformed_bootstrap_token_is_refused_at_start(settings: ServiceSettings, weak: str) -> None:
    with pytest.raises(ValidationError, match="admin_bootstrap_token") as refused:
        admin_settings(settings, weak)
    assert weak.split(".")[-1] not in str(refused.value) or len(weak.split(".")[-1]) < 3


async def test_a_revoked_bootstrap_token_stays_revoked_across_restarts(settings: ServiceSettings) -> None:
    for restart in range(2):
        admin = build_admin(admin_settings(settings, TOKEN))
        await admin.start()
        try:
            tokens = TokenStore(admin.db)
            principal = await tokens.authenticate(TOKEN)
            if restart == 0:
                assert principal is not None  # registered for the first login
                assert principal.role.value == "operator"
                assert await tokens.revoke(principal.token_id) is not None
            else:
                assert principal is None  # revoked, and the restart did not bring it back
        finally:
            await admin.drain(1)
            await admin.close()
            await delete_topology(settings.broker.amqp_url.get_secret_value(), admin.topology)
