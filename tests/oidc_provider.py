"""A local OpenID Connect provider for the sign-in tests: oidc-provider-mock (a Flask app on uvicorn) in its own
process on 127.0.0.1, the stand-in for Microsoft Entra ID and Google. It accepts any client id and secret,
signs ID tokens with RS256, publishes its keys and discovery document, and requires a nonce.

Its own process because it imports Authlib's deprecated ``authlib.jose``, whose warning the tests turn into
an error, and because a Flask server in the test's thread would share its event loop's GIL-bound time."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp

from skolsynk_testkit.devstack import free_port
from tests.helpers import wait_for


@dataclass
class LocalProvider:
    issuer: str
    process: asyncio.subprocess.Process

    async def ready(self) -> bool:
        if self.process.returncode is not None:
            raise AssertionError(f"the local OpenID provider exited with {self.process.returncode}")
        try:
            async with aiohttp.ClientSession() as http:
                async with http.get(f"{self.issuer}/.well-known/openid-configuration") as response:
                    return response.status == 200
        except aiohttp.ClientError:
            return False

    async def add_user(self, subject: str, **claims: Any) -> None:
        """The claims the provider puts in the ID token of the account ``subject`` (its ``sub``)."""
        async with aiohttp.ClientSession() as http:
            async with http.put(f"{self.issuer}/users/{quote(subject, safe='')}", json=claims) as response:
                assert response.status == 204, await response.text()

    async def authorize(self, http: aiohttp.ClientSession, authorization_url: str, subject: str) -> str:
        """Sign in at the provider as ``subject`` (its form, without a browser); the redirect back to skolsynk."""
        async with http.post(authorization_url, data={"sub": subject}, allow_redirects=False) as response:
            assert response.status == 302, await response.text()
            return response.headers["Location"]


@asynccontextmanager
async def local_provider(log_path: Path) -> AsyncIterator[LocalProvider]:
    port = free_port()
    with log_path.open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-W", "ignore", "-m", "oidc_provider_mock", "--host", "127.0.0.1", "--port", str(port),
            "--require-nonce", stdout=log, stderr=asyncio.subprocess.STDOUT, env={**os.environ, "NO_COLOR": "1"},
        )  # fmt: skip
        provider = LocalProvider(f"http://127.0.0.1:{port}", process)
        try:
            await wait_for(provider.ready, timeout=30, interval=0.1, what="the local OpenID provider")
            yield provider
        finally:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TimeoutError:
                process.kill()
                await process.wait()
