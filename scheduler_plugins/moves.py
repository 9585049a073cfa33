"""Per-computation records; a warning when a computation moves much raw data.

Each ``update_graph`` (one ``compute``/``persist``) is a :class:`Computation`: tasks run
per site, what it reads, the inputs its tasks fetched across site borders. The federation
page lists the recent ones (next to the cumulative per-site counters).

Routing runs each task at the site holding most of its input bytes, so a reduction
moves only small partial results. But a task that needs two sites' data (an element-wise
product of two fields, an alignment) must fetch one side's data whole: correct, and
often surprising. :class:`MovesPlugin` adds up, per computation (one ``update_graph``)
and source site, the bytes of inputs that a task placed at another site must fetch. When
they exceed ``federation.raw-move-warning`` (a share, default ``0.1``; ``0`` turns the
warning off) of the raw bytes of the datasets the computation reads at that site, the
client that submitted it gets one :class:`~federation.errors.RawDataMoveWarning`, with
the bytes, before the transfer happens.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, defaultdict, deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import dask
from dask.utils import format_bytes
from distributed.protocol import pickle

from federation.errors import FederationError, RawDataMoveWarning
from federation.protocol import site_of_ref

from .plugin import FederationPlugin
from .state import FederationState

if TYPE_CHECKING:
    from distributed.scheduler import Scheduler

logger = logging.getLogger(__name__)


@dataclass
class Computation:
    """What one submitted graph reads per site, and what it moved so far."""

    client: str
    #: ``federation.raw-move-warning`` when it was submitted (read once, not per task)
    share: float = 0.0
    started: float = field(default_factory=time.time)
    #: site -> datasets (``site/name``) the computation reads there
    reads: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    #: source site -> bytes of inputs fetched by tasks at other sites
    moved: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    #: (dependency key, destination site) already counted
    counted: set[tuple[Any, str]] = field(default_factory=set)
    warned: bool = False

    #: tasks submitted, and tasks run per site (a task rerun after a worker died counts
    #: again)
    keys: int = 0
    #: of those, not yet forgotten by the scheduler
    live: int = 0
    tasks: Counter[str] = field(default_factory=Counter)
    erred: int = 0

    @property
    def status(self) -> str:
        if self.erred:
            return "erred"
        if sum(self.tasks.values()) >= self.keys:
            return "finished"
        return "running" if self.live else "released"


class MovesPlugin(FederationPlugin):
    """Counts cross-site input fetches per computation; warns once above the share."""

    name = "federation-moves"

    def __init__(self, state: FederationState, keep: int = 20):
        self.state = state
        self.of_key: dict[Any, Computation] = {}
        #: the most recent computations, newest last
        self.recent: deque[Computation] = deque(maxlen=keep)

    @staticmethod
    def share() -> float:
        return float(dask.config.get("federation.raw-move-warning") or 0)

    def update_graph(
        self, scheduler: Scheduler, *, client: str, tasks: list, **kwargs: Any
    ) -> None:
        comp = Computation(client, share=self.share())
        self.recent.append(comp)
        graph = self.state.graph
        for ts in graph.tasks:
            self.of_key[ts.key] = comp
            comp.keys += 1
            comp.live += 1
            for kind, ref in graph.bound.get(ts.key, ()):
                if kind == "dataset":
                    comp.reads[site_of_ref(ref)].add(ref)

    def transition(self, key: Any, start: str, finish: str, *args: Any, **kwargs: Any) -> None:
        if finish == "forgotten":
            comp = self.of_key.pop(key, None)
            if comp is not None:
                comp.live -= 1
            return
        if not self.of_key or finish not in ("processing", "memory", "erred"):
            return
        comp = self.of_key.get(key)
        if comp is None:
            return
        if start == "processing" and finish == "memory":
            site = self.state.worker_site.get(kwargs.get("worker") or "")
            comp.tasks[site or "(unlabelled)"] += 1
            return
        if finish == "erred":
            comp.erred += 1
            return
        if finish != "processing" or comp.warned or comp.share <= 0:
            return
        ts = self.state.scheduler.tasks.get(key)
        ws = ts.processing_on if ts is not None else None
        here = self.state.worker_site.get(ws.address) if ws is not None else None
        if here is None:
            return
        for dts in ts.dependencies:
            sites = {self.state.worker_site.get(w.address) for w in dts.who_has or ()}
            if not sites or here in sites or (dts.key, here) in comp.counted:
                continue
            comp.counted.add((dts.key, here))
            source = min(s for s in sites if s) if any(sites) else None
            if source is not None:
                comp.moved[source] += max(dts.nbytes, 0)
                self._check(comp, source)

    def _raw(self, refs: set[str]) -> int:
        total = 0
        for ref in refs:
            try:
                total += self.state.dataset(ref).nbytes
            except FederationError:  # the site went away meanwhile: count nothing
                pass
        return total

    def _check(self, comp: Computation, source: str) -> None:
        raw = self._raw(comp.reads.get(source, set()))
        moved = comp.moved[source]
        if not raw or moved <= comp.share * raw:
            return
        comp.warned = True
        datasets = ", ".join(sorted(comp.reads[source]))
        message = (
            f"this computation moves {format_bytes(moved)} of data from site {source!r} "
            f"across site borders, {moved / raw:.0%} of the raw bytes of {datasets} "
            f"({format_bytes(raw)}). A task that needs data of two sites (e.g. an "
            "element-wise product of their fields) fetches one side whole; reduce each "
            "site's data first (e.g. .mean(...)) to move less. This warning appears above "
            f"federation.raw-move-warning ({comp.share:g} of the raw bytes)"
        )
        logger.info("Computation of client %s: %s", comp.client, message)
        scheduler = self.state.scheduler
        scheduler.log_event(
            "federation",
            {"action": "raw-move-warning", "client": comp.client, "site": source,
             "bytes": moved, "raw": raw},
        )
        comm = scheduler.client_comms.get(comp.client)
        if comm is not None:
            # the form distributed's Client turns into warnings.warn (its "warn" topic)
            event = {"message": pickle.dumps(message),
                     "category": pickle.dumps(RawDataMoveWarning)}
            comm.send({"op": "event", "topic": "warn", "event": (time.time(), event)})
