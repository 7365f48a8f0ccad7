"""``make demo``'s walk-through (``python -m demo.showcase --free-ports``) runs green end to end."""

from __future__ import annotations

import re
import sys

from e2e_support import run_program


async def test_showcase_runs_the_eight_scenes_and_exits_0() -> None:
    """The showcase streams the runs, the compensation, ErrorInfo, the crash, the Maestro.go
    scene (an envelope service, compensated through Compensate), the order-lines scenes
    (paths of foreach and sub-workflow steps, a rollback line by line) and the signals scene
    (an emit triggering another workflow, a wait woken by `maestro signals send`, duplicates
    starting nothing, the lineage drawn by `maestro signals show`), and exits 0."""
    done = await run_program([sys.executable, "-m", "demo.showcase", "--free-ports"], limit=50)
    assert done.code == 0, done.stdout + done.stderr
    out = done.stdout
    assert "finished               SUCCEEDED" in out
    assert "compensation_succeeded reserve" in out
    assert "result: COMPENSATED" in out
    assert "gRPC status: INVALID_ARGUMENT 'address must not be empty'" in out
    assert "ErrorInfo:   reason=INVALID_ARGUMENT domain=maestro.v1" in out
    assert out.count("step_retrying") == 4  # 2 + 1 in scene 3, the interrupted ship in scene 4
    assert "kill -9" in out
    assert "recovered              resumed by" in out
    assert "$ maestro executions show A-1004" in out
    assert "━━ 5. from Maestro.go, unchanged: order_rewards" in out
    assert "order_rewards  (execution" in out
    assert "step_failed            upgrade         attempt 1  FAILED_PRECONDITION: no tier" in out
    assert "Compensate CancelMembership" in out
    assert "Compensate RevokePoints" in out
    assert (
        "note: services.loyalty: protocol maestro-go (reflection lists maestro.v1.MaestroService"
        in out
    )
    assert "note: services.inventory: protocol grpc" in out
    assert "━━ 6. one reservation per order line" in out
    assert re.search(r"/payment.yaml:\d+:\d+: note: services.payments: protocol grpc", out)
    assert "step_started           lines[1].reserve   attempt 1" in out
    assert "step_succeeded         pay.charge         attempt 1" in out
    assert "step_skipped           review             switch 'route' took branch 1" in out
    assert "━━ 7. shipping refuses the parcel" in out
    assert "compensation_succeeded pay.charge" in out
    assert "compensation_succeeded lines[0].reserve" in out
    assert "reason: 'rollback after ship failed: FAILED_PRECONDITION'" in out
    assert "━━ 8. signals: pay_order emits order.paid" in out
    assert "step_succeeded         paid               attempt 1" in out
    assert "order.paid pay-A-2001.paid started fulfil:A-2001 (triggered_by pay-A-2001.paid)" in out
    assert "step_started           packed          attempt 1" in out
    assert "signal packed-A-2001 parcel.packed\n      woke fulfil:A-2001" in out
    assert "signal pay-A-2001.paid order.paid (duplicate: received before" in out
    assert "signal webhook-7781 order.paid\n      triggered fulfil:A-2001" in out
    assert "inventory received Reserve 1× for A-2001; executions of fulfil: fulfil:A-2001" in out
    assert "    execution pay-A-2001 (step paid)\n    └─ signal order.paid pay-A-2001.paid" in out
    assert "          └─ signal order.shipped fulfil:A-2001.shipped" in out
    assert "maestro.v1.Gateway/Execute" in out
    assert re.search(r"admin +http://127\.0\.0\.1:\d+ +\(/metrics /healthz /readyz\)", out)
    assert re.search(r"live view +http://127\.0\.0\.1:\d+/ +\(open it in a browser\)", out)
    assert out.rstrip().endswith("demo: every run behaved as expected")
