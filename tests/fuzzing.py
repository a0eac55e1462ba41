"""What the fuzz tests share (``tests/connected/test_*_fuzz.py``): their size, their seed and the tally of inputs
they tried (printed at the end of the session, see ``tests/connected/conftest.py``; docs/reliability.md).

Size: ``SKOLSYNK_FUZZ_EXAMPLES`` (``make test-chaos`` sets it; ``make test`` leaves it unset and runs each fuzz
test small). Seed: fixed at ``make test`` size, so a red ``make test`` is the same red on every machine; random at
chaos size, so every chaos run explores anew; the seed is printed with the tally, and ``SKOLSYNK_FUZZ_SEED``
replays it.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, example, given
from hypothesis import seed as hypothesis_seed
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

EXAMPLES_ENV = "SKOLSYNK_FUZZ_EXAMPLES"
SEED_ENV = "SKOLSYNK_FUZZ_SEED"
#: The seed of every fuzz test at ``make test`` size.
FIXED_SEED = 12000


def chaos_size() -> bool:
    """True when the suite runs the fuzz tests at scale (``SKOLSYNK_FUZZ_EXAMPLES`` is set)."""
    return bool(os.environ.get(EXAMPLES_ENV))


def examples(default: int, *, scale: int = 1) -> int:
    """Examples per fuzz test (per operation for the admin API): ``scale`` x ``SKOLSYNK_FUZZ_EXAMPLES``, or
    ``default``. A server that answers in milliseconds (the receiver, the webhook) takes a larger ``scale``, so
    that at chaos size each target gets thousands of inputs, as the admin API's 66 operations do."""
    return int(os.environ[EXAMPLES_ENV]) * scale if os.environ.get(EXAMPLES_ENV) else default


def seed() -> int:
    """``SKOLSYNK_FUZZ_SEED``; else the fixed seed at ``make test`` size and a random one at chaos size."""
    if os.environ.get(SEED_ENV):
        return int(os.environ[SEED_ENV])
    return random.SystemRandom().randrange(2**32) if chaos_size() else FIXED_SEED


def timeout_seconds(small: float) -> float:
    """A fuzz test's timeout: ``small`` at ``make test`` size, an hour at chaos size."""
    return 3600.0 if chaos_size() else small


def hypothesis_profile(max_examples: int) -> hypothesis_settings:
    """Hypothesis settings of a fuzz test that drives a server: no deadline (a slow store is not a failure),
    no health checks (the strategies are deliberately large), no example database (the seed says it all)."""
    return hypothesis_settings(
        max_examples=max_examples,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
        print_blob=True,
    )


@dataclass
class Target:
    """One fuzzed server: inputs tried, responses >= 500 seen, and the seed."""

    inputs: int = 0
    server_errors: int = 0
    seed: int | None = None


@dataclass
class Tally:
    targets: dict[str, Target] = field(default_factory=dict)

    def target(self, name: str, *, seed: int | None = None) -> Target:
        target = self.targets.setdefault(name, Target())
        target.seed = seed
        return target

    def lines(self) -> list[str]:
        lines = [
            f"{name}: {t.inputs} inputs, {t.server_errors} responses >= 500"
            + (f" (seed {t.seed})" if t.seed is not None else "")
            for name, t in sorted(self.targets.items())
        ]
        total = sum(t.inputs for t in self.targets.values())
        errors = sum(t.server_errors for t in self.targets.values())
        return [*lines, f"total: {total} inputs, {errors} responses >= 500"]

    def write(self, path: Path) -> None:
        path.write_text(
            json.dumps({name: vars(t) for name, t in self.targets.items()}, indent=2, sort_keys=True) + "\n",
            encoding="utf-8",
        )


#: The session's tally.
TALLY = Tally()


async def send_generated_sequences(
    send: Callable[[Any], Awaitable[None]],
    calls: st.SearchStrategy[Any],
    found: Sequence[Any],
    *,
    target: Target,
    default_examples: int,
) -> None:
    """Send hypothesis-generated sequences of one to four calls (``found``: a sequence pinned as an example,
    what the fuzzing found before) with ``send``, which checks each answer. Hypothesis drives a plain function
    in a worker thread; the calls run on the test's event loop."""
    loop = asyncio.get_running_loop()
    target.seed = seed()

    @hypothesis_seed(target.seed)
    @hypothesis_profile(examples(default_examples, scale=4))
    @given(sequence=st.lists(calls, min_size=1, max_size=4))
    @example(sequence=list(found))
    def run(sequence: list[Any]) -> None:
        for call in sequence:
            asyncio.run_coroutine_threadsafe(send(call), loop).result(timeout=60)

    await asyncio.to_thread(run)
