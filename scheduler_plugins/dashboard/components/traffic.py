"""Source × destination heat maps of bytes across site borders (log colour scale)."""

from __future__ import annotations

import math
from typing import ClassVar

from bokeh.models import ColumnDataSource, FactorRange, HoverTool
from bokeh.palettes import Oranges256
from bokeh.plotting import figure
from bokeh.transform import linear_cmap

from ...traffic import CLIENT
from .base import Component, PageView, empty, fmt_bytes, set_data

PALETTE = list(reversed(Oranges256))  # light for little, dark for much
FIELDS = ("source", "destination", "bytes", "nbytes", "transfers", "label", "level")


class TrafficHeatmap(Component):
    """Traffic of the last ``window`` seconds (``None``: since the hub started)."""

    row = "traffic"
    slow = True
    window: ClassVar[float | None] = None
    title: ClassVar[str]

    def __init__(self) -> None:
        self.source = ColumnDataSource(empty(*FIELDS))
        self.root = fig = figure(
            title=self.title, x_range=FactorRange(), y_range=FactorRange(), height=300,
            sizing_mode="stretch_width", toolbar_location=None, tools="",
            x_axis_label="destination", y_axis_label="source", name=f"federation-{self.name}",
        )
        fig.rect(x="destination", y="source", width=0.95, height=0.95, source=self.source,
                 fill_color=linear_cmap("level", PALETTE, 0, 1), line_color=None)
        fig.text(x="destination", y="source", text="label", source=self.source,
                 text_align="center", text_baseline="middle", text_font_size="11px")
        fig.add_tools(HoverTool(tooltips=[
            ("source → destination", "@source → @destination"),
            ("bytes on the wire", "@bytes{0,0}"), ("bytes in memory", "@nbytes{0,0}"),
            ("transfers", "@transfers")]))
        fig.grid.visible = False

    def update(self, view: PageView) -> None:
        history = view.plugin.history
        rows = history.latest() if self.window is None else history.window(self.window)[0]
        sites = view.plugin.tasks.site_names()
        ledger = {(r[0], r[1]): r[2:5] for r in rows}
        srcs = sorted(set(sites) | {s for s, _ in ledger})
        dests = sorted(set(sites) | {d for _, d in ledger} - {CLIENT}) + [CLIENT]
        top = max([v[0] for v in ledger.values()] + [1])
        data = empty(*FIELDS)
        for s, d in ((s, d) for s in srcs for d in dests if s != d):
            wire, nbytes, n = ledger.get((s, d), (0, 0, 0))
            for field, value in zip(FIELDS, (
                s, d, wire, nbytes, n, fmt_bytes(wire),
                math.log1p(wire) / math.log1p(top) if wire else 0.0,
            )):
                data[field].append(value)
        if list(self.root.x_range.factors) != dests:
            self.root.x_range.factors = dests
        if list(self.root.y_range.factors) != srcs:
            self.root.y_range.factors = srcs
        set_data(self.source, data)


class TrafficTotal(TrafficHeatmap):
    name = "total"
    title = "Traffic across site borders, cumulative"


class TrafficLastMinute(TrafficHeatmap):
    name = "minute"
    title = "Traffic across site borders, last minute"
    window = 60.0
