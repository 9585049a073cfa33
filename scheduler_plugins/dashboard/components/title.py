"""The page's title: the hub, and counts of sites, workers, datasets and bytes moved."""

from __future__ import annotations

import html

from bokeh.models import Div

from .base import Component, PageView, fmt_bytes


class Title(Component):
    name = "title"

    def __init__(self) -> None:
        self.root = Div(text="", sizing_mode="stretch_width", name="federation-title")

    def update(self, view: PageView) -> None:
        sites = view.sites
        workers = sum(len(s["workers"]) for s in sites.values())
        moved = sum(r[2] for r in view.plugin.history.latest())
        self.root.text = (
            f"<h2 style='margin:4px 0'>Federation hub {html.escape(view.scheduler.address)}</h2>"
            f"<p style='margin:0'>{len(sites)} sites, {workers} workers, "
            f"{len(view.datasets)} datasets; {fmt_bytes(moved)} crossed site borders so far</p>"
        )
