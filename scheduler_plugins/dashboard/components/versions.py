"""Dataset versions: which version of each dataset the hub knows, and when its site
noticed the change (see :mod:`federation.versions`)."""

from __future__ import annotations

import time

from .base import CatalogRows, Component, PageView, fit, set_data, table


def when(changed: float | None) -> str:
    """A Unix time as UTC text (``—``: not recorded)."""
    if changed is None:
        return "—"
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(changed))


class VersionsTable(Component):
    name = "versions"
    heading = "Dataset versions"
    slow = True

    def __init__(self) -> None:
        self.source, self.table = table("versions", [
            ("dataset", "Dataset"), ("version", "Version"),
            ("changed", "Last change noticed"), ("dims", "Dimensions"),
        ], height=120)
        self.rows = CatalogRows("versions")
        self.root = self.rows.layout(self.table)

    def update(self, view: PageView) -> None:
        rows = self.rows.select(view.datasets)
        set_data(self.source, {
            "dataset": [ref for ref, _ in rows],
            "version": [info.version for _, info in rows],
            "changed": [when(info.changed) for _, info in rows],
            "dims": [", ".join(f"{d}: {n}" for d, n in info.dims.items()) for _, info in rows],
        })
        fit(self.table, len(rows))
