"""A scheduler process for the scheduler-overhead case, with or without our plugins.

``python -m benchmarks.sched --host H --port P [--plugins [--no-capabilities]]
[--profile FILE]``

Identical in both variants except for ``scheduler_plugins.install(scheduler)``; with
``--profile`` the event-loop thread (where the scheduler and every plugin hook run) is
profiled with cProfile and the stats are written to FILE on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import logging
import time

from distributed import Scheduler
from distributed._signals import wait_for_signals


async def main(
    host: str, port: int, plugins: bool, profile: str | None, capabilities: bool = True
) -> None:
    scheduler = Scheduler(host=host, port=port, dashboard_address=":0")
    if plugins:
        import scheduler_plugins

        scheduler_plugins.install(scheduler)
        if not capabilities:  # only with benchmarks.unchecked_site's workers
            scheduler.remove_plugin(name="federation-capabilities")
    await scheduler
    print(f"scheduler at {scheduler.address} plugins={plugins}", flush=True)
    # CPU clock: idle time waiting in epoll does not count
    profiler = cProfile.Profile(time.process_time) if profile else None
    if profiler:
        profiler.enable()
    try:
        await wait_for_signals()
    finally:
        if profiler:
            profiler.disable()
            profiler.dump_stats(profile)
        await scheduler.close()


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--plugins", action="store_true")
    p.add_argument("--profile", default=None)
    p.add_argument("--no-capabilities", action="store_true",
                   help="do not sign site-bound calls (sites must not check them)")
    a = p.parse_args()
    asyncio.run(main(a.host, a.port, a.plugins, a.profile, not a.no_capabilities))
