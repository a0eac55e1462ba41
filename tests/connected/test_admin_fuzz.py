"""Schemathesis against the admin API's OpenAPI document: generated requests (valid and invalid, as an
operator, who may reach everything) never get a 5xx, and a write answered 4xx stores nothing (the check
``nothing_stored_from_rejected_input`` of ``tests/connected/admin_fuzz_hooks.py`` reads the admin's database
before and after every write). ``SKOLSYNK_FUZZ_EXAMPLES`` raises the number of examples per operation (the chaos
target runs hundreds; ``make test`` a few, with a fixed seed: ``tests/fuzzing.py``)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from skolsynk.service import ServiceApp
from skolsynk.settings import ServiceSettings
from skolsynk_services.admin.app import AdminSettings, build
from skolsynk_services.admin.auth import Role, TokenStore
from skolsynk_services.admin.openapi import DOCUMENT
from tests import fuzzing
from tests.helpers import delete_topology

REPO_ROOT = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.connected,
    pytest.mark.fuzz,
    pytest.mark.timeout(fuzzing.timeout_seconds(300)),
    pytest.mark.queues("normaliser.projections", "gdpr.events"),
]


@contextlib.asynccontextmanager
async def running_admin(settings: ServiceSettings) -> AsyncIterator[tuple[ServiceApp, AdminSettings, str]]:
    """The admin, and an operator's token."""
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
        yield app, admin_settings, token
    finally:
        await app.drain(1)
        await app.close()
        await delete_topology(settings.broker.amqp_url.get_secret_value(), app.topology)


async def test_generated_requests_never_get_a_server_error(settings: ServiceSettings, tmp_path: Path):
    async with running_admin(settings) as (app, admin_settings, token):
        examples, seed = fuzzing.examples(4), fuzzing.seed()
        target = fuzzing.TALLY.target("admin API (schemathesis)", seed=seed)
        process = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).parent / "schemathesis"),
            "run",
            str(DOCUMENT),
            "--url",
            f"http://127.0.0.1:{app.web_ports[0]}",
            "--header",
            f"Authorization: Bearer {token}",
            "--checks",
            "not_a_server_error,nothing_stored_from_rejected_input",
            "--max-examples",
            str(examples),
            "--seed",
            str(seed),
            "--workers",
            "1",
            "--request-timeout",  # a request the admin never answers is a reported failure, not a hang
            "30",
            "--report-dir",
            str(tmp_path),
            "--warnings",
            "off",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env={
                **os.environ,
                "NO_COLOR": "1",
                "SCHEMATHESIS_HOOKS": "tests.connected.admin_fuzz_hooks",
                "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]),
                "SKOLSYNK_FUZZ_MONGODB_URL": admin_settings.store.mongodb_url.get_secret_value(),
                "SKOLSYNK_FUZZ_DATABASE": admin_settings.store.mongodb_database,
            },
        )
        try:  # bounded below the test's own timeout, so a hung run is killed here, its pipe closed, its output shown
            output, _ = await asyncio.wait_for(process.communicate(), fuzzing.timeout_seconds(300) - 30)
        except TimeoutError:
            process.kill()
            output, _ = await process.communicate()
            pytest.fail("schemathesis did not finish: " + output.decode(errors="replace")[-6000:])
        text = output.decode(errors="replace")
        target.inputs += generated_cases(text)
        target.server_errors += len(re.findall(r"Server error", text))
        assert process.returncode == 0, text[-6000:]
        assert "No issues found" in text, text[-3000:]


def generated_cases(output: str) -> int:
    """The test cases (requests) schemathesis reports it generated."""
    found = re.search(r"Test cases:\s*\n?\s*(\d+) generated", output)
    assert found, output[-3000:]
    return int(found.group(1))


#: Names a store reads as operators or paths, or cannot store at all (a NUL byte), and a surrogate.
HOSTILE_NAMES = ("a\u0000b", "$where", "a.b", "", "\u0000", "x" * 300)


async def test_hostile_names_in_a_source_are_refused_and_nothing_is_stored(settings: ServiceSettings):
    """Pinned regression cases of the fuzz (a random run finds them only sometimes; issue 19: a NUL byte in a
    settings key was a 500 from the store): names the store cannot keep as field names, in a source's settings,
    secret names and secret references, are a 422 naming the field, never the name, and nothing is stored."""
    async with running_admin(settings) as (app, _, token), aiohttp.ClientSession() as http:
        base = f"http://127.0.0.1:{app.web_ports[0]}/api/v1"
        headers = {"Authorization": f"Bearer {token}"}
        async with http.post(
            f"{base}/tenants", json={"tenant_id": "kommun-f", "display_name": "F"}, headers=headers
        ) as r:
            assert r.status == 201, await r.text()
        source = {"source_id": "hostile", "kind": "ss12000", "display_name": "X"}
        for field in ("settings", "secrets", "secret_refs"):
            for name in HOSTILE_NAMES:
                body = {**source, field: {name: "SKOLSYNK_X"}}
                async with http.post(f"{base}/tenants/kommun-f/sources", json=body, headers=headers) as r:
                    text = await r.text()
                    assert r.status == 422, (field, name, r.status, text)
                    fields = {e["field"] for e in json.loads(text)["errors"]}
                    assert fields & {"settings", "secrets"}, text
                    if len(name) > 1:
                        assert json.dumps(name)[1:-1] not in text, text
        assert await app.db["admin_sources"].count_documents({}) == 0
