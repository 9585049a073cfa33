"""Site outages: tasks bound to a site wait for it, for a while.

A task restricted to a site (or to a dataset label) never runs elsewhere; while no
worker carries its label it sits in ``no-worker``. If the site comes back, the task
runs and the computation finishes; finished parts of other sites are kept. If the site
stays away longer than ``federation.site-outage-timeout`` (default 5 minutes), the
waiting tasks fail with :class:`~federation.errors.SiteUnavailable`, naming the site and
what was waiting.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from time import monotonic
from typing import TYPE_CHECKING, Any

import dask
from dask.utils import parse_timedelta
from distributed.core import Status
from tornado.ioloop import PeriodicCallback

from federation.errors import SiteUnavailable
from federation.protocol import describe_label, label_site

from .plugin import FederationPlugin
from .refusal import fail
from .routing import RoutingPlugin
from .state import FederationState

if TYPE_CHECKING:
    from distributed.scheduler import Scheduler, TaskState

logger = logging.getLogger(__name__)


class OutagePlugin(FederationPlugin):
    """Fails tasks that waited longer than the outage timeout for their site.

    Parameters
    ----------
    timeout:
        Seconds (or a dask time string); default ``federation.site-outage-timeout``.
    """

    name = "federation-outage"

    requires = (RoutingPlugin,)

    def __init__(self, state: FederationState, timeout: Any = None):
        self.state = state
        self.routing = state.plugin(RoutingPlugin)
        if timeout is None:
            timeout = dask.config.get("federation.site-outage-timeout")
        self.timeout = parse_timedelta(timeout)
        #: label -> monotonic time since which tasks wait for it with no worker carrying it
        self.down_since: dict[str, float] = {}

    async def start(self, scheduler: Scheduler) -> None:
        """Check every few seconds: timeouts are minutes, and a check scans every waiting
        task (the profile of a 145 k-task graph showed a 1 s period costing ~2 % CPU)."""
        check = PeriodicCallback(self.check, 1000 * min(5.0, max(self.timeout / 10, 0.5)))
        scheduler.periodic_callbacks["federation-site-outage"] = check
        if scheduler.status == Status.running:
            check.start()

    def remove_worker(self, scheduler: Scheduler, worker: str, **kwargs: Any) -> None:
        """Record a site going down when its last worker leaves."""
        site = self.state.worker_site.get(worker)
        if site and not self.state.workers_of(site):
            scheduler.log_event("federation", {"action": "site-down", "site": site})
            logger.warning("Site %s has no workers left; its tasks wait", site)

    def check(self) -> None:
        scheduler = self.state.scheduler
        now = monotonic()
        # labels of the tasks in no-worker: parked reads' from the site queue (a big
        # graph parks hundreds of thousands: only a dict look-up each), others' from
        # their restrictions
        parked = self.routing.parked
        waiting: dict[str, list[TaskState]] = defaultdict(list)
        parked_labels: set[str] = set()
        for ts in scheduler.unrunnable:
            if (label := parked.get(ts.key)) is not None:
                parked_labels.add(label)
            elif (label := self.routing.waiting_label(ts)) is not None:
                waiting[label].append(ts)
        served = {
            label
            for ws in scheduler.workers.values()
            if ws.status == Status.running
            for label in ws.resources
        }
        # a site whose batch jobs are queued is coming, not down
        down = {
            label for label in parked_labels | waiting.keys()
            if label not in served and not self.state.starting_workers(label_site(label))
        }
        if down & parked_labels:  # rare: a site is down; its parked reads by label
            for ts in scheduler.unrunnable:
                if (label := parked.get(ts.key)) in down:
                    waiting[label].append(ts)
        for label in list(self.down_since):
            if label not in down:
                del self.down_since[label]
        for label in down:
            since = self.down_since.setdefault(label, now)
            if now - since > self.timeout:
                self._fail(label, waiting[label])
                del self.down_since[label]

    def _fail(self, label: str, tasks: list[TaskState]) -> None:
        scheduler = self.state.scheduler
        what = describe_label(label)
        keys = [ts.key for ts in tasks]
        error = SiteUnavailable(
            f"{what} has been unavailable for more than {self.timeout:g} s; "
            f"{len(keys)} task(s) waiting for it failed, e.g. {keys[:3]}. The computation's "
            "parts at other sites were kept; resubmit when the site is back, or raise "
            "federation.site-outage-timeout"
        )
        fail(scheduler, keys, error, "site-outage")
        scheduler.log_event(
            "federation", {"action": "site-outage-timeout", "label": label, "tasks": len(keys)}
        )
        logger.error("%s unavailable: failed %d waiting task(s)", what, len(keys))
