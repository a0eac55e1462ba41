"""The demo's and bench's broker vhost (``skolsynk_testkit.devstack.claim_vhost``): a second run beside a
first gets a vhost of its own instead of deleting the first's, a vhost someone else made is never touched,
and only a leftover whose maker is gone is replaced."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator

import pytest

from skolsynk_testkit.devstack import DevStackError, claim_vhost, delete_vhost, rabbitmqctl

pytestmark = [pytest.mark.connected]


def vhosts() -> dict[str, str]:
    lines = rabbitmqctl("list_vhosts", "name", "description").splitlines()[1:]
    return {name: description for name, _, description in (line.partition("\t") for line in lines)}


@pytest.fixture
def base() -> Iterator[str]:
    name = f"skolsynk-test-claim-{uuid.uuid4().hex[:8]}"
    yield name
    for vhost in [v for v in vhosts() if v.startswith(name)]:
        with contextlib.suppress(DevStackError):
            delete_vhost(vhost)


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_a_vhost_in_use_or_not_ours_is_never_deleted(base: str) -> None:
    first = claim_vhost(base)  # made by this (running) process: in use
    assert first == base
    assert claim_vhost(base) == f"{base}-2"
    rabbitmqctl("add_vhost", f"{base}-3")  # someone else's, without our description
    assert claim_vhost(base) == f"{base}-4"
    assert {base, f"{base}-2", f"{base}-3", f"{base}-4"} <= set(vhosts())


def test_a_leftover_whose_maker_is_gone_is_replaced(base: str) -> None:
    host = socket.gethostname()
    rabbitmqctl("add_vhost", base, "--description", f"made by skolsynk devstack: host {host} pid {dead_pid()}")
    assert claim_vhost(base) == base
    assert vhosts()[base].endswith(f"pid {os.getpid()}")
    rabbitmqctl("add_vhost", f"{base}-other", "--description", "made by skolsynk devstack: host elsewhere pid 1")
    assert claim_vhost(f"{base}-other") == f"{base}-other-2"  # another machine's: not ours to judge
