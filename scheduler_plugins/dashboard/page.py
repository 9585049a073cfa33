"""The federation page: its components in order, laid out and refreshed."""

from __future__ import annotations

from itertools import groupby
from typing import TYPE_CHECKING, Any

from bokeh.layouts import column, row
from bokeh.models import Div

from .components.base import Component, PageView
from .components.catalog import DatasetsTable, MethodsTable, ResultsTable
from .components.computations import Computations
from .components.progress import SiteProgress
from .components.sites import SitesTable
from .components.standing import StandingTable
from .components.tasks import TasksPerSite
from .components.title import Title
from .components.traffic import TrafficLastMinute, TrafficTotal
from .components.versions import VersionsTable

if TYPE_CHECKING:
    from distributed.scheduler import Scheduler

    from .plugin import DashboardPlugin

#: The page, top to bottom: a new table or plot (a Component subclass) is one entry here.
COMPONENTS: list[type[Component]] = [
    Title,
    SitesTable,
    TasksPerSite,
    SiteProgress,
    Computations,
    TrafficTotal,
    TrafficLastMinute,
    DatasetsTable,
    VersionsTable,
    MethodsTable,
    ResultsTable,
    StandingTable,
]


class FederationPage:
    """The Bokeh models of one open page: its components (by name) and their layout."""

    def __init__(self, scheduler: Scheduler, plugin: DashboardPlugin):
        self.scheduler = scheduler
        self.plugin = plugin
        self.components: dict[str, Component] = {c.name: c() for c in COMPONENTS}
        children: list[Any] = []
        # consecutive components of one ``row`` side by side; headings above
        for _, group in groupby(self.components.values(), key=lambda c: c.row or c.name):
            members = list(group)
            children += [Div(text=f"<h3 style='margin:8px 0 0 0'>{c.heading}</h3>")
                         for c in members if c.heading]
            roots = [c.root for c in members]
            children.append(roots[0] if len(roots) == 1 else
                            row(*roots, sizing_mode="stretch_width"))
        self.root = column(*children, sizing_mode="stretch_width", name="federation-page")
        self.update()
        self.update_slow()

    def _update(self, slow: bool) -> None:
        view = PageView(self.scheduler, self.plugin)
        for component in self.components.values():
            if component.slow == slow:
                component.update(view)

    def update(self) -> None:
        """Refresh the fast components (every second)."""
        self._update(slow=False)

    def update_slow(self) -> None:
        """Refresh the slow components (every 2 s)."""
        self._update(slow=True)
