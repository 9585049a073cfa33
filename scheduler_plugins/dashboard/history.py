"""Traffic over time: snapshots of the cumulative ledger, sampled periodically.

:class:`TrafficSampler` asks the traffic plugin for its ledger every
``federation.dashboard.traffic-interval`` (2 s) and adds it to a :class:`TrafficHistory`
that keeps ``federation.dashboard.history`` (600 s); the page's heat maps and the HTTP
API's ``GET traffic?window=60`` read windows of it.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tornado.ioloop import PeriodicCallback

if TYPE_CHECKING:
    from ..traffic import TrafficPlugin

logger = logging.getLogger(__name__)

#: Rows of the ledger: (source, destination) -> [wire bytes, nbytes, transfers]
Ledger = dict[tuple[str, str], list[int]]


class TrafficHistory:
    """Timestamped snapshots of the cumulative traffic ledger, for windowed views.

    A ledger row is ``[source, destination, wire bytes, nbytes, transfers]``.
    """

    def __init__(self, keep: float = 600.0):
        #: seconds of snapshots kept (plus the one before, as the start of a window)
        self.keep = keep
        self.snapshots: deque[tuple[float, Ledger]] = deque()

    def add(self, rows: list[list[Any]], now: float | None = None) -> None:
        """Add the cumulative ledger ``rows`` as of ``now`` (UNIX time)."""
        now = time.time() if now is None else now
        self.snapshots.append((now, {(r[0], r[1]): list(r[2:5]) for r in rows}))
        while len(self.snapshots) > 2 and now - self.snapshots[1][0] > self.keep:
            self.snapshots.popleft()

    @staticmethod
    def _rows(ledger: Ledger) -> list[list[Any]]:
        return [[s, d, *v] for (s, d), v in sorted(ledger.items())]

    def latest(self) -> list[list[Any]]:
        """The newest cumulative ledger (rows)."""
        return self._rows(self.snapshots[-1][1]) if self.snapshots else []

    def window(self, seconds: float) -> tuple[list[list[Any]], float | None]:
        """Traffic of about the last ``seconds`` (latest snapshot minus the one before
        the window); returns the rows and the start time they cover."""
        if not self.snapshots:
            return [], None
        t_end, end = self.snapshots[-1]
        start_t, start = self.snapshots[0]
        for t, ledger in reversed(self.snapshots):
            if t <= t_end - seconds:
                start_t, start = t, ledger
                break
        if start is end:
            start = {}
        out: Ledger = {}
        for key, values in end.items():
            before = start.get(key, [0, 0, 0])
            diff = [a - b for a, b in zip(values, before)]
            if any(diff):
                out[key] = diff
        return self._rows(out), start_t


#: while no task changes state, the sampler asks the workers only every this many intervals
IDLE_EVERY = 15


class TrafficSampler:
    """Every ``interval`` seconds: collect the traffic plugin's ledger into ``history``,
    then call ``after`` (e.g. to keep per-site progress current). A failed sample is
    logged; sampling goes on.

    Collecting asks every site worker for its counters; with 50 sites that was most of an
    idle hub's CPU. Bytes cross borders when tasks run, so while no task changed state
    (:attr:`active` is set by the dashboard plugin's transition hook) only every
    :data:`IDLE_EVERY`-th sample is taken (results gathered later show up then).
    """

    def __init__(self, traffic: TrafficPlugin, history: TrafficHistory, interval: float,
                 after: Callable[[], Any] = lambda: None):
        self.traffic = traffic
        self.history = history
        self.interval = interval
        self.after = after
        self._pc: PeriodicCallback | None = None
        self._sampling = False
        #: a task changed state since the last sample
        self.active = True
        self._skipped = 0

    def start(self) -> None:
        self._pc = PeriodicCallback(self.sample, self.interval * 1000)
        self._pc.start()

    def stop(self) -> None:
        if self._pc is not None:
            self._pc.stop()

    async def sample(self) -> None:
        if self._sampling:  # the previous collection is still waiting for workers
            return
        if not self.active and self._skipped < IDLE_EVERY - 1:
            self._skipped += 1
            return
        self.active, self._skipped = False, 0
        self._sampling = True
        try:
            await self.traffic.collect()
            self.history.add(self.traffic.ledger())
            self.after()
        except Exception:
            logger.exception("Federation dashboard sampling failed")
        finally:
            self._sampling = False
