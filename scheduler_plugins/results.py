"""Who publishes a result, and from what: recorded by the hub, not claimed by the client.

When a graph arrives that stores a result (a :func:`~federation.results.write_result`
task), the hub records the submitter's identity from its connection (its certificate;
``"anonymous"`` on a ``tcp://`` hub) and the datasets and shared methods the stored
object is really computed from (the write task's lineage in the graph). The site's
worker asks for this record (``federation_result_publisher``) before it writes: it
refuses to replace another publisher's result, and it stores these facts as the
provenance; whatever the client said about itself is kept under ``claims``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dask._task_spec import Task

from federation.graph import bindings, read_versions
from federation.protocol import RESULT_PUBLISHER, Publisher, site_call_kind

from .grants import principal
from .plugin import FederationPlugin
from .state import FederationState

if TYPE_CHECKING:
    from distributed.scheduler import Scheduler, TaskState

#: the publisher of results submitted over a hub without TLS, where nobody is identified
ANONYMOUS = "anonymous"


@dataclass(frozen=True)
class Publication:
    """A pending result write, as the hub saw it arrive."""

    ref: str
    publisher: str
    datasets: tuple[str, ...]
    methods: tuple[str, ...]
    #: (dataset, version) the reads were pinned to
    versions: tuple[tuple[str, str], ...] = ()


def _lineage(ts: TaskState) -> tuple[set[str], set[str], set[tuple[str, str]]]:
    """Datasets read, methods called by ``ts`` and everything it depends on, and the
    ``(dataset, version)`` pairs its reads are pinned to."""
    datasets: set[str] = set()
    methods: set[str] = set()
    versions: set[tuple[str, str]] = set()
    seen, stack = {ts.key}, [ts]
    while stack:
        t = stack.pop()
        if t.run_spec is not None:
            for kind, ref in bindings(t.run_spec):
                if kind == "dataset":
                    datasets.add(ref)
                elif kind == "method":
                    methods.add(ref)
            versions.update(read_versions(t.run_spec))
        for dts in t.dependencies:
            if dts.key not in seen:
                seen.add(dts.key)
                stack.append(dts)
    return datasets, methods, versions


class ResultsPlugin(FederationPlugin):
    """Records result writes as they arrive; answers ``federation_result_publisher``."""

    name = "federation-results"

    def __init__(self, state: FederationState):
        self.state = state
        #: key of a write_result task -> what the hub knows about it, until forgotten
        self.publications: dict[Any, Publication] = {}

    async def start(self, scheduler: Scheduler) -> None:
        scheduler.handlers[RESULT_PUBLISHER] = self.publisher

    def update_graph(
        self, scheduler: Scheduler, *, client: str, tasks: list, **kwargs: Any
    ) -> None:
        # a write task is one delayed call: only its top-level function is looked at, so
        # the hub does not walk every task spec of every graph a second time
        for key in tasks:
            ts = scheduler.tasks.get(key)
            spec = ts.run_spec if ts is not None else None
            if not (isinstance(spec, Task) and site_call_kind(spec.func) == "result"):
                continue
            datasets, methods, versions = _lineage(ts)
            who = principal(self.state.client_identity.get(client))
            self.publications[key] = Publication(
                ref=spec.args[0], publisher=who or ANONYMOUS,
                datasets=tuple(sorted(datasets)), methods=tuple(sorted(methods)),
                versions=tuple(sorted(versions)),
            )

    def transition(self, key: Any, start: str, finish: str, *args: Any, **kwargs: Any) -> None:
        if finish == "forgotten" and self.publications:
            self.publications.pop(key, None)

    def publisher(self, site: str, session: str, ref: str, key: Any) -> dict[str, Any]:
        """Who stores ``ref`` with task ``key``, and from which datasets and methods.

        Only ``site`` itself may ask (see .handlers). A dataset's ``version`` is the one
        its reads were pinned to (the catalog's now for unpinned reads); ``versions``
        lists them all if the computation mixed several.
        """
        pub = self.publications.get(key if not isinstance(key, list) else tuple(key))
        if pub is None or pub.ref != ref or not ref.startswith(f"{site}/"):
            raise PermissionError(
                f"the hub has no record of a computation storing {ref!r} as task {key!r}"
            )
        known = self.state.datasets()
        methods = self.state.methods()
        pinned: dict[str, list[str]] = {}
        for r, v in pub.versions:
            pinned.setdefault(r, []).append(v)

        def version(r: str) -> dict[str, Any]:
            used = pinned.get(r) or ([known[r].version] if r in known else [None])
            return {"version": used[0], **({"versions": used} if len(used) > 1 else {})}

        return Publisher(
            published_by=pub.publisher,
            datasets=[{"dataset": r, **version(r)} for r in pub.datasets],
            methods=[
                {"method": r, "version": methods[r].version if r in methods else None}
                for r in pub.methods
            ],
        ).model_dump(mode="json")
