"""Tasks per site now: processing, queued at the site, in memory, erred (stacked bars)."""

from __future__ import annotations

from bokeh.models import ColumnDataSource, FactorRange, HoverTool, Range1d
from bokeh.plotting import figure

from .base import Component, PageView, empty, set_data

KINDS = ["processing", "queued", "memory", "erred"]
COLORS = ["#1f77b4", "#aec7e8", "#2ca02c", "#d62728"]


class TasksPerSite(Component):
    name = "tasks"
    row = "sites-now"

    def __init__(self) -> None:
        self.source = ColumnDataSource(empty("site", *KINDS))
        self.root = fig = figure(
            title="Tasks per site now", y_range=FactorRange(), x_range=Range1d(0, 1), height=240,
            sizing_mode="stretch_width", toolbar_location=None, tools="",
            x_axis_label="tasks", name="federation-tasks",
        )
        fig.hbar_stack(KINDS, y="site", height=0.7, color=COLORS, source=self.source,
                       legend_label=KINDS)
        fig.legend.orientation = "horizontal"
        fig.legend.location = "top_right"
        fig.add_tools(HoverTool(tooltips=[
            ("site", "@site"), ("processing", "@processing"), ("queued at site", "@queued"),
            ("in memory", "@memory"), ("erred", "@erred")]))

    def update(self, view: PageView) -> None:
        tasks = view.tasks
        names = sorted(set(view.sites) | set(tasks))
        if list(self.root.y_range.factors) != names:
            self.root.y_range.factors = names
        zero = dict.fromkeys(KINDS, 0)
        set_data(self.source, {
            "site": names, **{k: [tasks.get(n, zero)[k] for n in names] for k in KINDS}})
        most = max([sum(t[k] for k in KINDS) for t in tasks.values()] + [0])
        self.root.x_range.end = max(1.0, most * 1.1)
