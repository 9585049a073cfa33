"""Tasks per site: what each site processes, queues, holds and failed, and the
progress of its current computation."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

from federation.protocol import bound_site, label_site, site_of

from ..routing import RoutingPlugin

if TYPE_CHECKING:
    from ..state import FederationState


class SiteTasks:
    """Counts of tasks per site, from the scheduler's state and erred transitions.

    Progress of a site's computation counts from when the site got busy (tasks done
    since then) to when it is idle again; the last one is kept to show until the next.
    """

    def __init__(self, state: FederationState):
        self.state = state
        #: key -> site of currently erred tasks
        self.erred: dict[Any, str] = {}
        #: site -> tasks_done when it got busy; and (done, total) of its last computation
        self._base: dict[str, int] = {}
        self._last: dict[str, tuple[int, int]] = {}

    def transition(self, key: Any, start: str, finish: str) -> None:
        if finish == "erred":
            self.erred[key] = self._erred_site(key)
        elif start == "erred":
            self.erred.pop(key, None)

    def _erred_site(self, key: Any) -> str:
        ts = self.state.scheduler.tasks.get(key)
        if ts is None:
            return "unknown"
        workers = set(ts.erred_on or ())
        if not workers and ts.exception_blame is not None:
            workers = set(ts.exception_blame.erred_on or ())
        for addr in sorted(workers):
            if site := self.state.worker_site.get(addr):
                return site
        return bound_site(ts.resource_restrictions) or "unknown"

    def site_names(self) -> list[str]:
        """Registered sites and sites with workers, sorted."""
        names = set(self.state.sites) | {
            s for ws in self.state.scheduler.workers.values() if (s := site_of(ws.resources))
        }
        return sorted(names)

    def _queued(self) -> Counter[str]:
        """Tasks waiting for their site: parked reads and unrunnable site-bound tasks."""
        scheduler = self.state.scheduler
        queued: Counter[str] = Counter()
        parked = self.state.plugin(RoutingPlugin).parked
        # parked reads: key -> the label they need; counted per label at C speed (a big
        # graph parks hundreds of thousands, and this runs every sampling interval)
        for label, n in Counter(parked.values()).items():
            if site := label_site(label):
                queued[site] += n
        for ts in list(scheduler.unrunnable):
            if ts.key not in parked and (site := bound_site(ts.resource_restrictions)):
                queued[site] += 1
        return queued

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """Per site: tasks ``processing``, ``queued`` at the site, in ``memory``,
        ``erred``, and ``done`` / ``total`` / ``fraction`` / ``busy`` of its current (or
        last) computation."""
        queued = self._queued()
        erred = Counter(self.erred.values())
        out = {}
        for site in sorted(set(self.site_names()) | set(erred)):
            workers = self.state.workers_of(site)
            processing = sum(len(ws.processing) for ws in workers)
            memory = sum(len(ws.has_what) for ws in workers)
            done_total = self.state.tasks_done[site]
            busy = processing + queued[site] > 0
            if busy:
                base = self._base.setdefault(site, done_total)
                done = done_total - base
                total = done + processing + queued[site]
                self._last[site] = (done, total)
            else:
                if site in self._base:
                    base = self._base.pop(site)
                    self._last[site] = (done_total - base, done_total - base)
                done, total = self._last.get(site, (0, 0))
            out[site] = {
                "processing": processing, "queued": queued[site], "memory": memory,
                "erred": erred[site], "done": done, "total": total, "busy": busy,
                "fraction": done / total if total else (1.0 if done else 0.0),
            }
        return out
