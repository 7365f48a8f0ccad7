"""Fixtures shared by several test modules."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio
from pg_support import pg_cluster, pg_database

from demo.harness import DemoServices, running_services

__all__ = ["demo", "pg_cluster", "pg_database"]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def demo() -> AsyncIterator[DemoServices]:
    """The five demo services (grpcio, grpclib, Node.js, HTTP, sync grpcio on Maestro.go's envelope),
    started once per module."""
    async with running_services() as services:
        yield services
