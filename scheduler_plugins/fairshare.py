"""Fair shares between users: interleaved priorities, per-user limits, RPC rates.

**Priorities.** distributed orders tasks by ``(-user priority, generation, dask.order
rank)``: an older graph's tasks all come before a newer graph's, so a 200 000-task graph
of one user holds back a small job another user submits after it until the big graph's
ready tasks are gone. This plugin replaces the *generation* of each new task with a tag of
start-time fair queuing: a user's graph is tagged from ``max(V, F_user)`` upwards, one
step per task (``1 / weight``) in dask.order's order, where ``V`` is the largest tag of a
task that has finished (not of one sent to a worker: restricted tasks are all sent at
once and wait there) and ``F_user`` where that user's previous graphs end. So a small job
arriving while a big graph runs gets tags next to the big graph's *current* tasks and the
two interleave one for one: it waits for about as many of the big graph's tasks as it has
itself, instead of for the whole graph. Workers, the
scheduler's queue and the site queue all run tasks in priority order, so the interleaving
holds everywhere. Explicit priorities (``dask.annotate(priority=...)``,
``compute(priority=...)``) order a user's own tasks, not other users': a graph with a
raised priority is tagged in a second lane of its user that starts at ``V`` (so it comes
before the user's own waiting graphs), and its tasks are tagged in priority order. A
user thus gets at most two shares, however high the priorities they ask for; before,
``priority=1`` put a whole graph ahead of every other user's tasks.

**Limits per user** (a certificate's user, ``site:<name>`` for sites' workflows; without
TLS each client is its own user): a graph of more than ``max-graph-tasks`` tasks, or one
that would take the user over ``max-tasks-in-flight`` unfinished tasks, is refused before
anything runs (its tasks fail with :class:`FairShareExceeded` naming the limit).
``federation_*`` RPCs are throttled to ``rpc-per-second`` (burst ``rpc-burst``) per caller.

Settings (hub's dask config, ``federation.fair-share.*``): ``enabled`` (true),
``weights`` (user -> share, default 1), ``max-graph-tasks`` (1 000 000),
``max-tasks-in-flight`` (2 000 000), ``rpc-per-second`` (50), ``rpc-burst`` (200),
``http-per-second`` (50) and ``http-burst`` (200) for the HTTP API (:mod:`.http.guard`).
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import TYPE_CHECKING, Any

import dask

from .grants import principal
from .handlers import GuardedHandlers
from .plugin import FederationPlugin
from .ratelimit import UNTHROTTLED, Buckets, throttled

if TYPE_CHECKING:
    from distributed.scheduler import Scheduler

    from .state import FederationState

logger = logging.getLogger(__name__)

DONE = ("memory", "erred", "forgotten")


def setting(key: str) -> Any:
    """``federation.fair-share.<key>`` (defaults: federation.yaml)."""
    return dask.config.get(f"federation.fair-share.{key}")


class FairShareExceeded(PermissionError):
    """A graph over a per-user limit (the message names the limit and the setting)."""


class FairSharePlugin(FederationPlugin):
    """Tags new tasks for fair interleaving between users; enforces per-user limits."""

    name = "federation-fair-share"

    def __init__(self, state: FederationState) -> None:
        self.state = state
        self.refusals = state.refusals
        #: virtual time: the largest tag of a task that finished
        self.now = 0.0
        #: user -> tag where that user's submitted graphs end; the same for the user's
        #: graphs with raised priorities (their second lane)
        self.finish: dict[str, float] = {}
        self.finish_raised: dict[str, float] = {}
        #: task key -> the user who submitted it (shared: the site queue admits per user);
        #: user -> that user's unfinished tasks
        self.owner: dict[Any, str] = state.task_owner
        self.unfinished: Counter[str] = Counter()
        self.rpc = Buckets(lambda: float(setting("rpc-per-second")),
                           lambda: float(setting("rpc-burst")))

    async def start(self, scheduler: Scheduler) -> None:
        """Throttle the hub's ``federation_*`` RPCs per caller (around their guard)."""
        if not isinstance(scheduler.handlers, GuardedHandlers):  # installed by install()
            raise RuntimeError("the fair-share plugin needs scheduler_plugins.install()")
        scheduler.handlers.add_layer(lambda op, handler: throttled(
            handler, None if op in UNTHROTTLED else self.rpc,
            "federation.fair-share.rpc-per-second",
        ))

    def user_of(self, client: str) -> str:
        """The user a client acts for (its certificate's principal, else the client)."""
        return principal(self.state.client_identity.get(client)) or f"client:{client}"

    def update_graph(
        self, scheduler: Scheduler, *, client: str, tasks: list, stimulus_id: str, **kwargs: Any
    ) -> None:
        new = [ts for key in tasks
               if (ts := scheduler.tasks.get(key)) is not None and ts.state == "released"
               and ts.priority and key not in self.owner]
        if not new:
            return
        user = self.user_of(client)
        error = self._over_limit(user, len(new))
        if error is not None:
            self.refusals.refuse(new, FairShareExceeded(error))
            scheduler.log_event("federation", {"action": "graph-refused", "client": client,
                                               "reason": error})
            logger.warning("Refused a graph of %s: %s", user, error)
            return
        for ts in new:
            self.owner[ts.key] = user
        self.unfinished[user] += len(new)
        if not setting("enabled"):
            return
        step = 1.0 / max(float(setting("weights").get(user, 1)), 1e-6)
        # (-user priority, generation, rank): the user's priority orders the graph's
        # tasks, the tag replaces the generation, and no user outranks another
        raised = any(ts.priority[0] < 0 for ts in new)
        lane = self.finish_raised if raised else self.finish
        tag = max(self.now, lane.get(user, 0.0))
        for ts in sorted(new, key=lambda ts: ts.priority):
            ts.priority = (0, tag, *ts.priority[2:])
            tag += step
        lane[user] = tag

    def _over_limit(self, user: str, n: int) -> str | None:
        most = int(setting("max-graph-tasks"))
        if n > most:
            return (f"a graph of {n} tasks is larger than this hub accepts from one user "
                    f"({most}, federation.fair-share.max-graph-tasks); split it into smaller "
                    "computations. Nothing of it ran.")
        most = int(setting("max-tasks-in-flight"))
        running = self.unfinished[user]
        if running + n > most:
            return (f"{user} has {running} unfinished tasks; {n} more would exceed "
                    f"{most} (federation.fair-share.max-tasks-in-flight); wait for them "
                    "to finish. Nothing of this graph ran.")
        return None

    def transition(self, key: Any, start: str, finish: str, *args: Any, **kwargs: Any) -> None:
        user = self.owner.get(key)
        if user is not None and (start in DONE) != (finish in DONE):
            self.unfinished[user] += 1 if start in DONE else -1
        if finish == "forgotten" and user is not None:
            del self.owner[key]
        if start == "processing" and finish == "memory":
            # finished, not sent: restricted tasks are all sent to their workers at once,
            # which then run them in priority order; the tag of what just finished is
            # where service is
            ts = self.state.scheduler.tasks.get(key)
            if ts is not None and ts.priority and len(ts.priority) > 1:
                tag = ts.priority[1]
                if tag > self.now:
                    self.now = float(tag)
