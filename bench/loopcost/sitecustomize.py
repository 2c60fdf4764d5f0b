"""Per-callback CPU of an event loop, for bench/loopcost.py (a diagnostic).

With ``LOOPCOST=PREFIX`` in the environment and this directory on
``PYTHONPATH``, a controller (``--grpc-port`` among its arguments) or
bench/bare.py started by a bench times every callback its event loop runs
(``asyncio.Handle._run``, thread CPU time) and adds it up by what ran: a
task's coroutine, else the callback's name. Collections of the garbage
collector are added up by generation. Every 5 s it writes the totals so
far to ``PREFIX.PID.N`` (N counting from 1); bench/loopcost.py subtracts
two of them. Each callback costs about half a microsecond more timed:
compare callbacks with each other, not the loop's total with an untimed
run. Any other process, or without LOOPCOST, this does nothing.
"""

from __future__ import annotations

import os
import sys

SNAPSHOT_EVERY = 5.0


def _install(prefix: str) -> None:
    import asyncio.events
    import gc
    import threading
    import time
    from collections import defaultdict

    totals: defaultdict[str, list[float]] = defaultdict(lambda: [0, 0.0])
    run = asyncio.events.Handle._run
    cpu = time.thread_time

    def name_of(callback: object) -> str:
        owner = getattr(callback, "__self__", None)
        if owner is not None and hasattr(owner, "get_coro"):
            coro = owner.get_coro()
            return "task " + str(getattr(coro, "__qualname__", None) or coro)
        return str(getattr(callback, "__qualname__", None) or type(callback).__name__)

    def timed_run(handle: asyncio.events.Handle) -> None:
        name = name_of(handle._callback)  # type: ignore[attr-defined]
        start = cpu()
        try:
            run(handle)
        finally:
            total = totals[name]
            total[0] += 1
            total[1] += cpu() - start

    collecting = [0.0]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            collecting[0] = cpu()
        else:
            total = totals[f"gc generation {info['generation']}"]
            total[0] += 1
            total[1] += cpu() - collecting[0]

    def snapshots() -> None:
        n = 0
        while True:
            time.sleep(SNAPSHOT_EVERY)
            n += 1
            rows = [(name, count, secs) for name, (count, secs) in list(totals.items())]
            with open(f"{prefix}.{os.getpid()}.{n}", "w") as out:
                out.writelines(f"{secs!r}\t{int(count)}\t{name}\n" for name, count, secs in rows)

    asyncio.events.Handle._run = timed_run  # type: ignore[method-assign,assignment]
    gc.callbacks.append(on_gc)
    threading.Thread(target=snapshots, name="loopcost", daemon=True).start()


_prefix = os.environ.get("LOOPCOST")
if _prefix and ("--grpc-port" in sys.argv or sys.argv[0].endswith("bare.py")):
    _install(_prefix)
