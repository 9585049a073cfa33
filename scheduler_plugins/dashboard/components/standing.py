"""Standing computations: results a site keeps up to date as their dataset grows
(see :mod:`federation.standing`), from the provenance their site announces."""

from __future__ import annotations

from .base import Component, PageView, fit, set_data, table
from .versions import when

COLUMNS = [("result", "Result"), ("dataset", "Dataset"), ("along", "Along"),
           ("state", "State"), ("steps", "Steps"), ("updated", "Last update"),
           ("error", "Last error")]


class StandingTable(Component):
    name = "standing"
    heading = "Standing computations"
    slow = True

    def __init__(self) -> None:
        self.source, self.root = table("standing", COLUMNS, height=90)

    def update(self, view: PageView) -> None:
        rows = sorted((ref, p["standing"]) for ref, p in view.results.items()
                      if isinstance(p.get("standing"), dict))
        set_data(self.source, {
            "result": [ref for ref, _ in rows],
            "dataset": [str(s.get("dataset", "")) for _, s in rows],
            "along": [str(s.get("along", "")) for _, s in rows],
            "state": [str(s.get("state", "")) for _, s in rows],
            "steps": [str(s.get("steps", "")) for _, s in rows],
            "updated": [when(s.get("updated")) for _, s in rows],
            "error": [str(s.get("error") or "") for _, s in rows],
        })
        fit(self.root, len(rows))
