"""The federation page of the hub's Dask dashboard (``/federation``).

:class:`DashboardPlugin` mounts a Bokeh document on the scheduler's own HTTP server
the way distributed mounts its pages (a :func:`distributed.dashboard.core.BokehApplication`
added to ``scheduler.http_application``) and adds "Federation" to the dashboard's
navigation bar. The page updates live:

* **Sites**: status, connectivity (direct, or outbound-only with the bytes the relay
  carried), workers, threads, memory used / limit, datasets, methods.
* **Tasks per site** right now (processing, queued at the site, in memory, erred) and
  the progress of the site's current computation (tasks done since it got busy).
* **Traffic**: source × destination heat maps of bytes across site borders,
  cumulative and for the last minute.
* **Catalog**: datasets, shared methods, published results.

Traffic comes from :meth:`TrafficPlugin.collect`, sampled every
``federation.dashboard.traffic-interval`` (2 s) into a rolling :class:`TrafficHistory`
of ``federation.dashboard.history`` (600 s) that the HTTP API also serves
(``GET traffic?window=60``).
"""

from __future__ import annotations

import html
import logging
import math
import time
from collections import Counter, deque
from typing import TYPE_CHECKING, Any

import dask
from dask.utils import format_bytes, parse_timedelta
from distributed import SchedulerPlugin
from tornado.ioloop import IOLoop, PeriodicCallback

from .state import FederationState
from .traffic import CLIENT

if TYPE_CHECKING:
    from distributed.scheduler import Scheduler

logger = logging.getLogger(__name__)

PAGE = "federation"
#: Rows of the ledger: (source, destination) -> [wire bytes, nbytes, transfers]
Ledger = dict[tuple[str, str], list[int]]


class TrafficHistory:
    """Timestamped snapshots of the cumulative traffic ledger, for windowed views."""

    def __init__(self, keep: float = 600.0):
        self.keep = keep
        self.snapshots: deque[tuple[float, Ledger]] = deque()

    def add(self, rows: list[list[Any]], now: float | None = None) -> None:
        now = time.time() if now is None else now
        self.snapshots.append((now, {(r[0], r[1]): list(r[2:5]) for r in rows}))
        while len(self.snapshots) > 2 and now - self.snapshots[1][0] > self.keep:
            self.snapshots.popleft()

    @staticmethod
    def _rows(ledger: Ledger) -> list[list[Any]]:
        return [[s, d, *v] for (s, d), v in sorted(ledger.items())]

    def latest(self) -> list[list[Any]]:
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


class DashboardPlugin(SchedulerPlugin):
    """Samples traffic, counts erred tasks per site and serves the federation page."""

    name = "federation-dashboard"

    def __init__(self, state: FederationState, interval: float | str | None = None):
        self.state = state
        try:
            if interval is None:
                interval = dask.config.get("federation.dashboard.traffic-interval")
            self.interval = parse_timedelta(interval)
            keep = parse_timedelta(dask.config.get("federation.dashboard.history"))
        except (KeyError, TypeError, ValueError) as e:  # a bad setting must not stop the hub
            logger.error("Bad federation.dashboard setting (%s); using 2s and 600s", e)
            self.interval, keep = 2.0, 600.0
        self.history = TrafficHistory(keep=keep)
        #: key -> site of currently erred tasks
        self.erred: dict[Any, str] = {}
        #: site -> tasks_done when it got busy; and (done, total) of its last computation
        self._base: dict[str, int] = {}
        self._last: dict[str, tuple[int, int]] = {}
        self._pc: PeriodicCallback | None = None
        self._sampling = False
        self.page_mounted = False

    @property
    def scheduler(self) -> Scheduler:
        return self.state.scheduler

    async def start(self, scheduler: Scheduler) -> None:
        self._pc = PeriodicCallback(self._sample, self.interval * 1000)
        self._pc.start()
        try:
            self.page_mounted = mount_page(scheduler)
        except Exception:  # never let the dashboard stop the hub
            logger.exception("Could not add the federation page to the dashboard")

    async def close(self) -> None:
        if self._pc is not None:
            self._pc.stop()

    async def _sample(self) -> None:
        if self._sampling:
            return
        self._sampling = True
        try:
            traffic = self.scheduler.plugins.get("federation-traffic")
            if traffic is not None:
                await traffic.collect()
                self.history.add(traffic.ledger())
            self.site_tasks()  # keeps the per-site progress baselines current
        except Exception:
            logger.exception("Federation dashboard sampling failed")
        finally:
            self._sampling = False

    # -- tasks per site ----------------------------------------------------------------------

    def transition(self, key: Any, start: str, finish: str, *args: Any, **kwargs: Any) -> None:
        if finish == "erred":
            self.erred[key] = self._erred_site(key)
        elif start == "erred":
            self.erred.pop(key, None)

    def _erred_site(self, key: Any) -> str:
        from .routing import _label_site

        ts = self.scheduler.tasks.get(key)
        if ts is None:
            return "unknown"
        workers = set(ts.erred_on or ())
        if not workers and ts.exception_blame is not None:
            workers = set(ts.exception_blame.erred_on or ())
        for addr in sorted(workers):
            if site := self.state.worker_site.get(addr):
                return site
        return _label_site(ts.resource_restrictions) or "unknown"

    def site_names(self) -> list[str]:
        from federation.labels import site_of

        names = set(self.state.sites) | {
            s for ws in self.scheduler.workers.values() if (s := site_of(ws.resources))
        }
        return sorted(names)

    def site_tasks(self) -> dict[str, dict[str, Any]]:
        """Per site: tasks processing, queued at the site, in memory, erred, and the
        progress (done / total) of its current (or last) computation."""
        from .routing import _label_site

        queued: Counter[str] = Counter()
        routing = self.scheduler.plugins.get("federation-routing")
        parked = getattr(routing, "parked", {}) or {}
        for label in list(parked.values()):  # parked reads: key -> the label they need
            if site := _label_site({label: 1}):
                queued[site] += 1
        for ts in list(self.scheduler.unrunnable):
            if ts.key not in parked and (site := _label_site(ts.resource_restrictions)):
                queued[site] += 1
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


# -- the Bokeh page -----------------------------------------------------------------------------


def mount_page(scheduler: Scheduler) -> bool:
    """Add ``/federation`` to the scheduler's dashboard; False if it has none."""
    app = getattr(scheduler, "http_application", None)
    bokeh_apps = [a for a in getattr(app, "applications", ()) if hasattr(a, "app_paths")]
    if app is None or not bokeh_apps:
        return False  # no dashboard (or bokeh missing)
    if any(f"/{PAGE}" in a.app_paths or f"{a.prefix}/{PAGE}" in a.app_paths for a in bokeh_apps):
        return True
    from distributed.dashboard.core import BokehApplication
    from distributed.dashboard.scheduler import template_variables

    variables = template_variables(scheduler)  # memoized: shared by all dashboard pages
    if PAGE not in variables["pages"]:
        pages = variables["pages"]
        pages.insert(pages.index("status") + 1 if "status" in pages else len(pages), PAGE)
    prefix = bokeh_apps[0].prefix
    bokeh_app = BokehApplication(
        {f"/{PAGE}": federation_doc}, scheduler, prefix=prefix, template_variables=variables
    )
    app.add_application(bokeh_app)
    bokeh_app.initialize(IOLoop.current())
    bokeh_app.start()
    return True


def _fmt_bytes(n: float) -> str:
    return format_bytes(int(n)) if n else "0 B"


def _connectivity(site: dict) -> str:
    if site.get("connectivity") != "outbound-only":
        return "direct"
    return f"outbound-only, {_fmt_bytes(site.get('relayed_bytes', 0))} relayed"


def _jobs(jobs: dict | None) -> str:
    """A batch site's workers: '2 running, 1 pending (Resources), 0-4 adaptive'."""
    if not jobs:
        return ""
    text = f"{jobs['running']} running, {jobs['pending']} pending"
    if jobs.get("pending_reason"):
        text += f" ({jobs['pending_reason']})"
    if jobs.get("adaptive"):
        text += f", {jobs['minimum']}-{jobs['maximum']} adaptive"
    if jobs.get("failed"):
        text += f", {jobs['failed']} failed" + (" (stopped)" if jobs.get("halted") else "")
    return f"{jobs['type']}: {text}"


class FederationPage:
    """The Bokeh models of one open page; ``update*`` refresh them from the hub state."""

    def __init__(self, scheduler: Scheduler, plugin: DashboardPlugin):
        from bokeh.layouts import column, row
        from bokeh.models import (
            ColumnDataSource,
            DataTable,
            Div,
            FactorRange,
            HoverTool,
            NumberFormatter,
            Range1d,
            TableColumn,
        )
        from bokeh.palettes import Oranges256
        from bokeh.plotting import figure
        from bokeh.transform import linear_cmap

        palette = list(reversed(Oranges256))  # light for little, dark for much

        self.scheduler = scheduler
        self.plugin = plugin
        self.state = plugin.state
        self.title = Div(text="", sizing_mode="stretch_width")

        # sites
        self.sites_source = ColumnDataSource(self._empty(
            "site", "status", "connectivity", "workers", "jobs", "nthreads", "memory",
            "datasets", "methods", "tasks_done"))
        self.sites_table = DataTable(
            source=self.sites_source, index_position=None, height=140,
            sizing_mode="stretch_width", name="federation-sites",
            columns=[
                TableColumn(field="site", title="Site"),
                TableColumn(field="status", title="Status"),
                TableColumn(field="connectivity", title="Connectivity", width=200),
                TableColumn(field="workers", title="Workers"),
                TableColumn(field="jobs", title="Batch jobs", width=220),
                TableColumn(field="nthreads", title="Threads"),
                TableColumn(field="memory", title="Memory used / limit"),
                TableColumn(field="datasets", title="Datasets", width=220),
                TableColumn(field="methods", title="Methods", width=220),
                TableColumn(field="tasks_done", title="Tasks run (all, since the hub started)",
                            width=230, formatter=NumberFormatter(format="0,0")),
            ],
        )

        # tasks per site, and progress of current computations
        self.kinds = ["processing", "queued", "memory", "erred"]
        colors = ["#1f77b4", "#aec7e8", "#2ca02c", "#d62728"]
        self.tasks_source = ColumnDataSource(self._empty("site", *self.kinds))
        self.tasks_fig = figure(
            title="Tasks per site now", y_range=FactorRange(), x_range=Range1d(0, 1), height=240,
            sizing_mode="stretch_width", toolbar_location=None, tools="",
            x_axis_label="tasks", name="federation-tasks",
        )
        self.tasks_fig.hbar_stack(
            self.kinds, y="site", height=0.7, color=colors, source=self.tasks_source,
            legend_label=self.kinds,
        )
        self.tasks_fig.legend.orientation = "horizontal"
        self.tasks_fig.legend.location = "top_right"
        self.tasks_fig.add_tools(HoverTool(tooltips=[
            ("site", "@site"), ("processing", "@processing"), ("queued at site", "@queued"),
            ("in memory", "@memory"), ("erred", "@erred")]))

        self.progress_source = ColumnDataSource(self._empty(
            "site", "fraction", "one", "label", "color"))
        self.progress_fig = figure(
            title="Progress of the current computation per site", y_range=FactorRange(),
            x_range=(0, 1), height=240, sizing_mode="stretch_width", toolbar_location=None,
            tools="", name="federation-progress",
        )
        self.progress_fig.hbar(y="site", left=0, right="one", height=0.6, color="#eeeeee",
                               source=self.progress_source)
        self.progress_fig.hbar(y="site", left=0, right="fraction", height=0.6, color="color",
                               source=self.progress_source)
        self.progress_fig.text(x=0.01, y="site", text="label", source=self.progress_source,
                               text_baseline="middle", text_font_size="11px")
        self.progress_fig.xaxis.visible = False

        # traffic heat maps
        self.heat = {}
        heat_figs = []
        for key, title in (("total", "Traffic across site borders, cumulative"),
                           ("minute", "Traffic across site borders, last minute")):
            source = ColumnDataSource(self._empty(
                "source", "destination", "bytes", "nbytes", "transfers", "label", "level"))
            fig = figure(
                title=title, x_range=FactorRange(), y_range=FactorRange(), height=300,
                sizing_mode="stretch_width", toolbar_location=None, tools="",
                x_axis_label="destination", y_axis_label="source", name=f"federation-{key}",
            )
            fig.rect(x="destination", y="source", width=0.95, height=0.95, source=source,
                     fill_color=linear_cmap("level", palette, 0, 1), line_color=None)
            fig.text(x="destination", y="source", text="label", source=source,
                     text_align="center", text_baseline="middle", text_font_size="11px")
            fig.add_tools(HoverTool(tooltips=[
                ("source → destination", "@source → @destination"),
                ("bytes on the wire", "@bytes{0,0}"), ("bytes in memory", "@nbytes{0,0}"),
                ("transfers", "@transfers")]))
            fig.grid.visible = False
            self.heat[key] = (source, fig)
            heat_figs.append(fig)

        # catalog
        self.datasets_source = ColumnDataSource(self._empty(
            "dataset", "kind", "variables", "dims", "dtype", "size", "description"))
        self.datasets_table = DataTable(
            source=self.datasets_source, index_position=None, height=160,
            sizing_mode="stretch_width", name="federation-datasets",
            columns=[TableColumn(field=f, title=t) for f, t in (
                ("dataset", "Dataset"), ("kind", "Kind"), ("variables", "Variables"),
                ("dims", "Dimensions"), ("dtype", "Type"), ("size", "Size"),
                ("description", "Description"))],
        )
        self.methods_source = ColumnDataSource(self._empty(
            "method", "kind", "signature", "summary"))
        self.methods_table = DataTable(
            source=self.methods_source, index_position=None, height=140,
            sizing_mode="stretch_width", name="federation-methods",
            columns=[TableColumn(field=f, title=t) for f, t in (
                ("method", "Method"), ("kind", "Kind"), ("signature", "Signature"),
                ("summary", "Summary"))],
        )
        self.results_source = ColumnDataSource(self._empty(
            "result", "source", "published_by", "published_at"))
        self.results_table = DataTable(
            source=self.results_source, index_position=None, height=120,
            sizing_mode="stretch_width", name="federation-results",
            columns=[TableColumn(field=f, title=t) for f, t in (
                ("result", "Published result"), ("source", "Stored"),
                ("published_by", "Published by"), ("published_at", "When"))],
        )

        # one row per computation (compute/persist call), newest first
        self.computations_source = ColumnDataSource(self._empty(
            "started", "client", "status", "tasks", "per_site", "fetched"))
        self.computations_table = DataTable(
            source=self.computations_source, index_position=None, height=120,
            sizing_mode="stretch_width", name="federation-computations",
            columns=[TableColumn(field=f, title=t, width=w) for f, t, w in (
                ("started", "Started", 80), ("client", "Client", 220), ("status", "Status", 90),
                ("tasks", "Tasks run / submitted", 140), ("per_site", "Tasks run per site", 260),
                ("fetched", "Inputs fetched across site borders", 200))],
        )

        from .versions_panel import VersionsPanel  # bokeh, like the rest of the page

        self.versions = VersionsPanel(self.state)

        def h(text: str) -> Div:
            return Div(text=f"<h3 style='margin:8px 0 0 0'>{text}</h3>")

        self.root = column(
            self.title,
            h("Sites"), self.sites_table,
            row(self.tasks_fig, self.progress_fig, sizing_mode="stretch_width"),
            h("Computations (most recent first; tasks counted per computation)"),
            self.computations_table,
            row(*heat_figs, sizing_mode="stretch_width"),
            h("Datasets"), self.datasets_table, self.versions.root,
            h("Shared methods"), self.methods_table,
            h("Published results"), self.results_table,
            sizing_mode="stretch_width", name="federation-page",
        )
        self.update()
        self.update_slow()

    @staticmethod
    def _empty(*names: str) -> dict[str, list]:
        return {n: [] for n in names}

    @staticmethod
    def _set(source: Any, data: dict[str, list]) -> None:
        if dict(source.data) != data:
            source.data = data

    # fast: sites, tasks, progress
    def update(self) -> None:
        sites = self.state.sites_info()
        tasks = self.plugin.site_tasks()
        names = sorted(set(sites) | set(tasks))
        total_workers = sum(len(s["workers"]) for s in sites.values())
        self.title.text = (
            f"<h2 style='margin:4px 0'>Federation hub {html.escape(self.scheduler.address)}</h2>"
            f"<p style='margin:0'>{len(sites)} sites, {total_workers} workers, "
            f"{len(self.state.datasets())} datasets; "
            f"{_fmt_bytes(sum(r[2] for r in self.plugin.history.latest()))} crossed site "
            "borders so far</p>"
        )
        self._set(self.sites_source, {
            "site": list(sites),
            "status": [s["status"] for s in sites.values()],
            "connectivity": [_connectivity(s) for s in sites.values()],
            "workers": [len(s["workers"]) for s in sites.values()],
            "jobs": [_jobs(s.get("jobs")) for s in sites.values()],
            "nthreads": [s["nthreads"] for s in sites.values()],
            "memory": [f"{_fmt_bytes(s['memory_used'])} / {_fmt_bytes(s['memory_limit'])}"
                       for s in sites.values()],
            "datasets": [", ".join(s["datasets"]) for s in sites.values()],
            "methods": [", ".join(s.get("methods", [])) for s in sites.values()],
            "tasks_done": [s["tasks_done"] for s in sites.values()],
        })
        self.sites_table.height = 30 + 28 * max(len(sites), 1)
        if list(self.tasks_fig.y_range.factors) != names:
            self.tasks_fig.y_range.factors = names
            self.progress_fig.y_range.factors = names
        empty = {k: 0 for k in self.kinds}
        self._set(self.tasks_source, {
            "site": names, **{k: [tasks.get(n, empty).get(k, 0) for n in names]
                              for k in self.kinds}})
        most = max([sum(t[k] for k in self.kinds) for t in tasks.values()] + [0])
        self.tasks_fig.x_range.end = max(1.0, most * 1.1)
        progress = [tasks.get(n, {"done": 0, "total": 0, "fraction": 0.0, "busy": False})
                    for n in names]
        self._set(self.progress_source, {
            "site": names,
            "fraction": [p["fraction"] for p in progress],
            "one": [1.0] * len(names),
            "label": [
                f"{p['done']} / {p['total']} tasks" + ("" if p["busy"] else
                                                        (" (idle)" if p["total"] else " idle"))
                for p in progress
            ],
            "color": ["#1f77b4" if p["busy"] else "#9ecae1" for p in progress],
        })

    def _update_computations(self) -> None:
        moves = self.scheduler.plugins.get("federation-moves")
        recent = list(reversed(moves.recent)) if moves is not None else []
        rows: dict[str, list] = self._empty(
            "started", "client", "status", "tasks", "per_site", "fetched")
        for c in recent:
            run = sum(c.tasks.values())
            rows["started"].append(time.strftime("%H:%M:%S", time.localtime(c.started)))
            rows["client"].append(c.client)
            rows["status"].append(c.status)
            rows["tasks"].append(f"{run:,} / {c.keys:,}")
            rows["per_site"].append(", ".join(f"{s}: {n:,}" for s, n in sorted(c.tasks.items())))
            rows["fetched"].append(", ".join(
                f"from {s}: {_fmt_bytes(n)}" for s, n in sorted(c.moved.items())) or "none")
        self._set(self.computations_source, rows)
        self.computations_table.height = 30 + 28 * max(len(recent), 1)

    # slow: traffic and catalog
    def update_slow(self) -> None:
        self._update_computations()
        self.versions.update()
        history = self.plugin.history
        sites = self.plugin.site_names()
        for key, rows in (("total", history.latest()), ("minute", history.window(60)[0])):
            source, fig = self.heat[key]
            ledger = {(r[0], r[1]): r[2:5] for r in rows}
            srcs = sorted(set(sites) | {s for s, _ in ledger})
            dests = sorted(set(sites) | {d for _, d in ledger} - {CLIENT}) + [CLIENT]
            cells = [(s, d) for s in srcs for d in dests if s != d]
            top = max([v[0] for v in ledger.values()] + [1])
            data: dict[str, list] = self._empty(
                "source", "destination", "bytes", "nbytes", "transfers", "label", "level")
            for s, d in cells:
                wire, nbytes, n = ledger.get((s, d), (0, 0, 0))
                data["source"].append(s)
                data["destination"].append(d)
                data["bytes"].append(wire)
                data["nbytes"].append(nbytes)
                data["transfers"].append(n)
                data["label"].append(_fmt_bytes(wire))
                data["level"].append(math.log1p(wire) / math.log1p(top) if wire else 0.0)
            if list(fig.x_range.factors) != dests:
                fig.x_range.factors = dests
            if list(fig.y_range.factors) != srcs:
                fig.y_range.factors = srcs
            self._set(source, data)

        results = {
            f"{record.name}/{name}": prov
            for record in self.state.sites.values()
            for name, (_, prov) in getattr(record, "results", {}).items()
        }
        rows = sorted(self.state.datasets().items())
        self._set(self.datasets_source, {
            "dataset": [ref for ref, _ in rows],
            "kind": ["result" if ref in results else "dataset" for ref, _ in rows],
            "variables": [", ".join(i.data_vars) for _, i in rows],
            "dims": [", ".join(f"{d}: {n}" for d, n in i.dims.items()) for _, i in rows],
            "dtype": [i.summary()["dtype"] for _, i in rows],
            "size": [_fmt_bytes(i.nbytes) for _, i in rows],
            "description": [i.description for _, i in rows],
        })
        self.datasets_table.height = 30 + 28 * max(len(rows), 1)
        methods = sorted(getattr(self.state, "methods", dict)().items())
        self._set(self.methods_source, {
            "method": [ref for ref, _ in methods],
            "kind": [m.kind for _, m in methods],
            "signature": [f"{m.name}{m.signature}" for _, m in methods],
            "summary": [m.summary for _, m in methods],
        })
        self.methods_table.height = 30 + 28 * max(len(methods), 1)
        published = [(ref, "site " + ref.split("/", 1)[0], str(p.get("published_by", "")),
                      str(p.get("published_at", ""))) for ref, p in sorted(results.items())]
        publish_ext = self.scheduler.extensions.get("publish")
        for name in sorted(map(str, getattr(publish_ext, "datasets", {}) or {})):
            published.append((name, "hub (Client.publish_dataset)", "", ""))
        self._set(self.results_source, {
            "result": [p[0] for p in published],
            "source": [p[1] for p in published],
            "published_by": [p[2] for p in published],
            "published_at": [p[3] for p in published],
        })
        self.results_table.height = 30 + 28 * max(len(published), 1)


def federation_doc(scheduler: Scheduler, extra: dict[str, Any], doc: Any) -> None:
    """Bokeh document of ``/federation`` (called by distributed's BokehApplication)."""
    from distributed.dashboard.components.scheduler import BOKEH_THEME, env

    plugin = scheduler.plugins.get(DashboardPlugin.name)
    if plugin is None:  # page mounted without the plugin: give it a private one
        from . import install

        plugin = DashboardPlugin(install(scheduler))
    page = FederationPage(scheduler, plugin)
    doc.title = "Dask: Federation"
    doc.add_root(page.root)
    doc.template = env.get_template("simple.html")
    doc.template_variables.update(extra)
    doc.theme = BOKEH_THEME

    def guarded(update: Any) -> Any:
        def callback() -> None:
            try:
                update()
            except Exception:
                logger.exception("Federation dashboard update failed")
        return callback

    doc.add_periodic_callback(guarded(page.update), 1000)
    doc.add_periodic_callback(guarded(page.update_slow), 2000)

