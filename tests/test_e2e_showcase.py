"""``make demo``'s walk-through (``python -m demo.showcase --free-ports``) runs green end to end."""

from __future__ import annotations

import sys

from e2e_support import run_program


async def test_showcase_runs_the_three_checkouts_and_exits_0() -> None:
    """The showcase streams the three runs, shows the compensation and ErrorInfo, and exits 0."""
    done = await run_program([sys.executable, "-m", "demo.showcase", "--free-ports"], limit=50)
    assert done.code == 0, done.stdout + done.stderr
    out = done.stdout
    assert "finished               SUCCEEDED" in out
    assert "compensation_succeeded reserve" in out
    assert "result: COMPENSATED" in out
    assert "gRPC status: INVALID_ARGUMENT 'address must not be empty'" in out
    assert "ErrorInfo:   reason=INVALID_ARGUMENT domain=maestro.v1" in out
    assert out.count("step_retrying") == 3
    assert "maestro.v1.Gateway/Execute" in out
    assert out.rstrip().endswith("demo: every run behaved as expected")
