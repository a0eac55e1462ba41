"""Schemathesis against the admin API's OpenAPI document: generated requests (valid and invalid, as an
operator, who may reach everything) never get a 5xx. ``SKOLSYNK_FUZZ_EXAMPLES`` raises the number of
examples per operation (the chaos target runs thousands; CI a few)."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from skolsynk.settings import ServiceSettings
from skolsynk_services.admin.app import AdminSettings, build
from skolsynk_services.admin.auth import Role, TokenStore
from skolsynk_services.admin.openapi import DOCUMENT
from tests.helpers import delete_topology

pytestmark = [
    pytest.mark.connected,
    pytest.mark.fuzz,
    pytest.mark.timeout(300),
    pytest.mark.queues("normaliser.projections", "gdpr.events"),
]


async def test_generated_requests_never_get_a_server_error(settings: ServiceSettings, tmp_path: Path):
    admin_settings = AdminSettings.model_validate(
        {
            **settings.model_dump(),
            "admin_port": 0,
            "admin_host": "127.0.0.1",
            "admin_secrets_key": "2mJ3m6mCAxzGzO8Ihc4r3Vxv3Fj0vIYbVwJJmQKkV4g=",
            # The fuzzer sends as fast as it can, with bad tokens too: the limits are tested on their own.
            "admin_api_requests_per_second": 10_000,
            "admin_signin_failures_per_minute": 1000,
        }
    )
    app = build(admin_settings)
    try:
        await app.start()
        token, _ = await TokenStore(app.db).create(role=Role.OPERATOR, subject="fuzzer", tenant_id=None, created_by="t")
        examples = os.environ.get("SKOLSYNK_FUZZ_EXAMPLES", "4")
        process = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).parent / "schemathesis"),
            "run",
            str(DOCUMENT),
            "--url",
            f"http://127.0.0.1:{app.web_ports[0]}",
            "--header",
            f"Authorization: Bearer {token}",
            "--checks",
            "not_a_server_error",
            "--max-examples",
            examples,
            "--seed",
            "12000",
            "--workers",
            "1",
            "--report-dir",
            str(tmp_path),
            "--warnings",
            "off",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env={**os.environ, "NO_COLOR": "1", "SCHEMATHESIS_HOOKS": ""},
        )
        output, _ = await process.communicate()
        text = output.decode(errors="replace")
        assert process.returncode == 0, text[-6000:]
        assert "No issues found" in text, text[-3000:]
    finally:
        await app.drain(1)
        await app.close()
        await delete_topology(settings.broker.amqp_url.get_secret_value(), app.topology)
