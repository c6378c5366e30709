"""Built-in job kinds: ``sleep``, a smoke test of the queue that needs no data.

``modelworks jobs submit sleep --spec '{"seconds": 2}'`` runs it; ``{"fail": true}`` makes
it fail at the end, ``{"fail": 1}`` only in its first attempt (to see a retry succeed), and
``{"result": {...}}`` is returned as its result.
"""

from __future__ import annotations

import time
from typing import Any

from modelworks.core.errors import InvalidInput
from modelworks.training.jobs.context import JobContext

MAX_SLEEP_S = 24 * 3600


def validate_sleep_spec(spec: dict[str, Any]) -> None:
    seconds = spec.get("seconds", 1)
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        raise InvalidInput(f"sleep: 'seconds' must be a number; got {seconds!r}.")
    if not 0 <= seconds <= MAX_SLEEP_S:
        raise InvalidInput(f"sleep: 'seconds' must be between 0 and {MAX_SLEEP_S}; got {seconds}.")
    steps = spec.get("steps", 10)
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= 10_000:
        raise InvalidInput(f"sleep: 'steps' must be an integer from 1 to 10000; got {steps!r}.")
    fail = spec.get("fail", False)
    if not isinstance(fail, (bool, int)):
        raise InvalidInput(f"sleep: 'fail' is true, false or a number of attempts; got {fail!r}.")
    unknown = set(spec) - {"seconds", "steps", "fail", "result"}
    if unknown:
        raise InvalidInput(
            f"sleep: unknown spec keys {sorted(unknown)}; use seconds, steps, fail, result."
        )


def sleep_job(ctx: JobContext) -> dict[str, Any]:
    """Sleep ``seconds`` (default 1) in ``steps`` (default 10), logging progress."""
    validate_sleep_spec(ctx.spec)
    seconds = float(ctx.spec.get("seconds", 1))
    steps = int(ctx.spec.get("steps", 10))
    ctx.log(f"sleeping {seconds:g} s in {steps} steps (attempt {ctx.attempt})")
    started = time.monotonic()
    for step in range(1, steps + 1):
        if ctx.cancelled():
            ctx.log(f"cancelled at step {step - 1}")
            return {"slept_s": round(time.monotonic() - started, 3), "cancelled": True}
        time.sleep(seconds / steps)
        ctx.progress(step / steps, f"step {step}/{steps}")
    fail = ctx.spec.get("fail", False)
    if fail is True or (not isinstance(fail, bool) and ctx.attempt <= int(fail)):
        raise RuntimeError(f"sleep job asked to fail (attempt {ctx.attempt})")
    return {
        "slept_s": round(time.monotonic() - started, 3),
        "attempt": ctx.attempt,
        **dict(ctx.spec.get("result") or {}),
    }


sleep_job.validate_spec = validate_sleep_spec  # type: ignore[attr-defined]
