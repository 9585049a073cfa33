"""The dashboard's scheduler plugin: samples traffic, follows erred tasks, mounts the page."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import dask
from dask.utils import parse_timedelta
from distributed import SchedulerPlugin

from ..traffic import TrafficPlugin
from .history import TrafficHistory, TrafficSampler
from .mount import mount_page
from .tasks import SiteTasks

if TYPE_CHECKING:
    from distributed.scheduler import Scheduler

    from ..state import FederationState

logger = logging.getLogger(__name__)


def _settings(interval: float | str | None) -> tuple[float, float]:
    """Sampling interval and history kept (s): ``federation.dashboard.traffic-interval``
    and ``.history``; a bad setting is logged and replaced by 2 s / 600 s, because it
    must not stop the hub."""
    try:
        if interval is None:
            interval = dask.config.get("federation.dashboard.traffic-interval")
        return (parse_timedelta(interval),
                parse_timedelta(dask.config.get("federation.dashboard.history")))
    except (KeyError, TypeError, ValueError) as e:
        logger.error("Bad federation.dashboard setting (%s); using 2s and 600s", e)
        return 2.0, 600.0


class DashboardPlugin(SchedulerPlugin):
    """Samples traffic into :attr:`history`, counts tasks per site (:attr:`tasks`) and
    serves the federation page."""

    name = "federation-dashboard"

    def __init__(self, state: FederationState, interval: float | str | None = None):
        self.state = state
        self.interval, keep = _settings(interval)
        self.history = TrafficHistory(keep=keep)
        self.tasks = SiteTasks(state)
        # sampling also keeps the per-site progress baselines current between page views
        self.sampler = TrafficSampler(state.plugin(TrafficPlugin), self.history, self.interval,
                                      after=self.tasks.snapshot)
        self.page_mounted = False

    async def start(self, scheduler: Scheduler) -> None:
        self.sampler.start()
        try:
            self.page_mounted = mount_page(scheduler)
        except Exception:  # never let the dashboard stop the hub
            logger.exception("Could not add the federation page to the dashboard")

    async def close(self) -> None:
        self.sampler.stop()

    def transition(self, key: Any, start: str, finish: str, *args: Any, **kwargs: Any) -> None:
        self.sampler.active = True
        self.tasks.transition(key, start, finish)
