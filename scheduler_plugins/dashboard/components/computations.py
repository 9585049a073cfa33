"""One row per computation (``compute``/``persist`` call), most recent first."""

from __future__ import annotations

import time

from ...moves import MovesPlugin
from .base import Component, PageView, empty, fit, fmt_bytes, set_data, table

COLUMNS = [
    ("started", "Started", 80), ("client", "Client", 220), ("status", "Status", 90),
    ("tasks", "Tasks run / submitted", 140), ("per_site", "Tasks run per site", 260),
    ("fetched", "Inputs fetched across site borders", 200),
]


class Computations(Component):
    name = "computations"
    heading = "Computations (most recent first; tasks counted per computation)"
    slow = True

    def __init__(self) -> None:
        self.source, self.root = table("computations", COLUMNS, height=120)

    def update(self, view: PageView) -> None:
        recent = list(reversed(view.state.plugin(MovesPlugin).recent))
        rows = empty(*(c[0] for c in COLUMNS))
        for c in recent:
            run = sum(c.tasks.values())
            rows["started"].append(time.strftime("%H:%M:%S", time.localtime(c.started)))
            rows["client"].append(c.client)
            rows["status"].append(c.status)
            rows["tasks"].append(f"{run:,} / {c.keys:,}")
            rows["per_site"].append(", ".join(f"{s}: {n:,}" for s, n in sorted(c.tasks.items())))
            rows["fetched"].append(", ".join(
                f"from {s}: {fmt_bytes(n)}" for s, n in sorted(c.moved.items())) or "none")
        set_data(self.source, rows)
        fit(self.root, len(recent))
