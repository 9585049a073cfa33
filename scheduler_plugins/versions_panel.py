"""The federation page's panel of dataset versions: which version of each dataset the
hub knows, and when its site noticed the change (see :mod:`federation.versions`)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from bokeh.layouts import column
from bokeh.models import ColumnDataSource, DataTable, Div, TableColumn

if TYPE_CHECKING:
    from .state import FederationState


def _when(changed: float | None) -> str:
    if changed is None:
        return "—"
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(changed))


class VersionsPanel:
    """A table: dataset, version, last change, dimensions (updated by the page)."""

    def __init__(self, state: FederationState):
        self.state = state
        self.source = ColumnDataSource({"dataset": [], "version": [], "changed": [], "dims": []})
        self.table = DataTable(
            source=self.source, index_position=None, height=120,
            sizing_mode="stretch_width", name="federation-versions",
            columns=[TableColumn(field=f, title=t) for f, t in (
                ("dataset", "Dataset"), ("version", "Version"),
                ("changed", "Last change noticed"), ("dims", "Dimensions"))],
        )
        self.root = column(
            Div(text="<h3 style='margin:8px 0 0 0'>Dataset versions</h3>"), self.table,
            sizing_mode="stretch_width",
        )

    def update(self) -> None:
        rows = sorted(self.state.datasets().items())
        data = {
            "dataset": [ref for ref, _ in rows],
            "version": [info.version for _, info in rows],
            "changed": [_when(info.changed) for _, info in rows],
            "dims": [", ".join(f"{d}: {n}" for d, n in info.dims.items()) for _, info in rows],
        }
        if dict(self.source.data) != data:
            self.source.data = data
        self.table.height = 30 + 28 * max(len(rows), 1)
