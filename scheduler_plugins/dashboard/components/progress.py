"""Progress of each site's current (or last) computation, as horizontal bars."""

from __future__ import annotations

from typing import Any

from bokeh.models import ColumnDataSource, FactorRange
from bokeh.plotting import figure

from .base import Component, PageView, empty, set_data

IDLE: dict[str, Any] = {"done": 0, "total": 0, "fraction": 0.0, "busy": False}


def label(p: dict[str, Any]) -> str:
    """'12 / 40 tasks', '40 / 40 tasks (idle)' or '0 / 0 tasks idle'."""
    state = "" if p["busy"] else (" (idle)" if p["total"] else " idle")
    return f"{p['done']} / {p['total']} tasks{state}"


class SiteProgress(Component):
    name = "progress"
    row = "sites-now"

    def __init__(self) -> None:
        self.source = ColumnDataSource(empty("site", "fraction", "one", "label", "color"))
        self.root = fig = figure(
            title="Progress of the current computation per site", y_range=FactorRange(),
            x_range=(0, 1), height=240, sizing_mode="stretch_width", toolbar_location=None,
            tools="", name="federation-progress",
        )
        fig.hbar(y="site", left=0, right="one", height=0.6, color="#eeeeee", source=self.source)
        fig.hbar(y="site", left=0, right="fraction", height=0.6, color="color",
                 source=self.source)
        fig.text(x=0.01, y="site", text="label", source=self.source, text_baseline="middle",
                 text_font_size="11px")
        fig.xaxis.visible = False

    def update(self, view: PageView) -> None:
        names = sorted(set(view.sites) | set(view.tasks))
        if list(self.root.y_range.factors) != names:
            self.root.y_range.factors = names
        progress = [view.tasks.get(n, IDLE) for n in names]
        set_data(self.source, {
            "site": names,
            "fraction": [p["fraction"] for p in progress],
            "one": [1.0] * len(names),
            "label": [label(p) for p in progress],
            "color": ["#1f77b4" if p["busy"] else "#9ecae1" for p in progress],
        })
