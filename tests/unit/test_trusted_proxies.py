"""Forwarded headers are believed only from a configured proxy (skolsynk.proxies, issue 19)."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import make_mocked_request

from skolsynk.proxies import TrustedProxies, parse_networks

pytestmark = pytest.mark.unit

FORWARDED = {
    "X-Forwarded-Proto": "https",
    "X-Forwarded-Host": "admin.kommun.example",
    "X-Forwarded-For": "198.51.100.7",
}


class Transport:
    def __init__(self, peer: str) -> None:
        self.peer = peer

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return (self.peer, 40000) if name == "peername" else default


def request(peer: str, headers: dict[str, str]) -> Any:
    return make_mocked_request("POST", "/ui/login", headers={"Host": "10.0.0.5:8080", **headers},
                               transport=Transport(peer))  # fmt: skip


def test_a_trusted_proxy_gives_the_browser_scheme_host_and_address() -> None:
    resolved = TrustedProxies(["10.0.0.0/8"]).resolve(request("10.2.3.4", FORWARDED))
    assert (resolved.scheme, resolved.host, resolved.remote, resolved.secure) == (
        "https", "admin.kommun.example", "198.51.100.7", True,
    )  # fmt: skip


def test_anyone_else_sending_the_headers_changes_nothing() -> None:
    for proxies in (TrustedProxies(), TrustedProxies(["10.0.0.0/8"])):
        resolved = proxies.resolve(request("203.0.113.9", FORWARDED))
        assert (resolved.scheme, resolved.host, resolved.secure) == ("http", "10.0.0.5:8080", False)


def test_the_client_is_the_first_address_from_the_right_that_is_not_a_proxy() -> None:
    headers = {"X-Forwarded-For": "6.6.6.6, 198.51.100.7, 10.9.9.9", "X-Forwarded-Proto": "http, https"}
    resolved = TrustedProxies(["10.0.0.0/8"]).resolve(request("10.2.3.4", headers))
    assert (resolved.remote, resolved.scheme) == ("198.51.100.7", "https")  # a spoofed left-most entry is ignored


def test_odd_forwarded_values_are_ignored_not_believed() -> None:
    headers = {"X-Forwarded-Proto": "gopher", "X-Forwarded-Host": "evil.example/<x>", "X-Forwarded-For": "nonsense"}
    resolved = TrustedProxies(["10.2.3.4"]).resolve(request("10.2.3.4", headers))
    assert (resolved.scheme, resolved.host) == ("http", "10.0.0.5:8080")


def test_a_bad_network_is_named() -> None:
    with pytest.raises(ValueError, match="not an IP address or network: 'intranet'"):
        parse_networks(["10.0.0.0/8", "intranet"])
