"""Fixtures shared by several test modules, and the Hypothesis profiles.

Hypothesis runs under the ``ci`` profile unless ``HYPOTHESIS_PROFILE`` names another: ``ci`` is
derandomized (the same examples on every run, so CI never fails by chance) with no example
database; ``fuzz`` draws 50 times as many examples at random and keeps failing ones in
``.hypothesis/`` to replay them first next time (``HYPOTHESIS_PROFILE=fuzz pytest
tests/test_fuzz_language.py tests/test_fuzz_requests.py``). Tests that choose their own number of
examples take it as a fraction of the profile's ``settings.default.max_examples``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest_asyncio
from hypothesis import HealthCheck, settings
from pg_support import pg_cluster, pg_database

from demo.harness import DemoServices, running_services

__all__ = ["demo", "pg_cluster", "pg_database"]

settings.register_profile(
    "ci",
    max_examples=100,
    derandomize=True,
    database=None,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "fuzz",
    max_examples=5000,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def demo() -> AsyncIterator[DemoServices]:
    """The five demo services (grpcio, grpclib, Node.js, HTTP, sync grpcio on Maestro.go's envelope),
    started once per module."""
    async with running_services() as services:
        yield services
