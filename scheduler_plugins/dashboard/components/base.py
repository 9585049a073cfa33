"""What every component of the federation page is and shares.

A component is one table or plot (like distributed's ``dashboard/components``): it
builds its Bokeh models in ``__init__`` and refreshes them in ``update`` from a
:class:`PageView`, the hub state of one refresh, computed once for all components.
"""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar

import dask
from dask.utils import format_bytes

if TYPE_CHECKING:
    from bokeh.models import ColumnDataSource, LayoutDOM
    from distributed.scheduler import Scheduler

    from ...catalog import DatasetInfo
    from ..plugin import DashboardPlugin

#: rows of a table shown without scrolling: height = HEADER + ROW * rows
HEADER, ROW = 30, 28


class PageView:
    """The hub state one refresh of the page shows; each part is read once, when first
    used by a component."""

    def __init__(self, scheduler: Scheduler, plugin: DashboardPlugin):
        self.scheduler = scheduler
        self.plugin = plugin
        self.state = plugin.state

    @cached_property
    def sites(self) -> dict[str, dict[str, Any]]:
        """``fed.sites()``: site -> status, workers, memory, datasets …"""
        return self.state.sites_info()

    @cached_property
    def tasks(self) -> dict[str, dict[str, Any]]:
        """site -> tasks processing, queued, in memory, erred, and progress."""
        return self.plugin.tasks.snapshot()

    @cached_property
    def datasets(self) -> list[tuple[str, DatasetInfo]]:
        """``(site/name, info)`` of the catalog, sorted."""
        return sorted(self.state.datasets().items())

    @cached_property
    def results(self) -> dict[str, dict[str, Any]]:
        """Published results at sites: ``site/name`` -> provenance."""
        return {
            f"{record.name}/{name}": provenance
            for record in self.state.sites.values()
            for name, (_, provenance) in record.results.items()
        }


class Component:
    """One table or plot of the page.

    ``heading`` is shown above it; consecutive components with the same ``row`` sit side
    by side; ``slow`` ones refresh every 2 s instead of every second. ``root`` is the
    Bokeh model placed on the page (named ``federation-<name>``).
    """

    name: ClassVar[str]
    heading: ClassVar[str | None] = None
    row: ClassVar[str | None] = None
    slow: ClassVar[bool] = False
    root: LayoutDOM

    def update(self, view: PageView) -> None:
        raise NotImplementedError


def fmt_bytes(n: float) -> str:
    return format_bytes(int(n)) if n else "0 B"


def empty(*names: str) -> dict[str, list]:
    """Empty columns of a data source."""
    return {n: [] for n in names}


def set_data(source: ColumnDataSource, data: dict[str, list]) -> None:
    """Replace ``source``'s data only if it changed (each change is sent to browsers)."""
    if dict(source.data) != data:
        source.data = data


def table(name: str, columns: list[tuple[str, str] | tuple[str, str, int]],
          height: int = 140, formatters: dict[str, Any] | None = None
          ) -> tuple[ColumnDataSource, Any]:
    """A data source and a full-width ``DataTable`` named ``federation-<name>`` of
    ``(field, title[, width in px])`` columns, with optional per-field formatters."""
    from bokeh.models import ColumnDataSource, DataTable, TableColumn

    formatters = formatters or {}
    source = ColumnDataSource(empty(*(c[0] for c in columns)))
    cols = []
    for field, title, *width in columns:
        kw: dict[str, Any] = {"width": width[0]} if width else {}
        if field in formatters:
            kw["formatter"] = formatters[field]
        cols.append(TableColumn(field=field, title=title, **kw))
    return source, DataTable(
        source=source, columns=cols, index_position=None, height=height,
        sizing_mode="stretch_width", name=f"federation-{name}",
    )


class CatalogRows:
    """A filter box above a catalog table, and the rows it shows: those whose ``site/name``
    contains the box's text, at most ``federation.dashboard.max-rows`` of them. A hub with
    10 000 datasets would otherwise rebuild and send 10 000 rows every refresh (the page
    took 9 s to open); ``fed.catalog()`` lists them all."""

    def __init__(self, name: str) -> None:
        from bokeh.models import Div, TextInput

        self.box = TextInput(placeholder="filter: part of site/name", width=260,
                             name=f"federation-{name}-filter")
        self.note = Div(text="", name=f"federation-{name}-note")

    def layout(self, table: Any) -> Any:
        from bokeh.layouts import column, row

        return column(row(self.box, self.note), table, sizing_mode="stretch_width")

    def select(self, rows: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
        """The ``(ref, item)`` rows to show; says in the note how many are hidden."""
        text = (self.box.value or "").strip()
        matching = [r for r in rows if text in r[0]] if text else rows
        most = int(dask.config.get("federation.dashboard.max-rows"))
        shown = matching[:most]
        hidden = len(matching) - len(shown)
        note = (f"first {len(shown):,} of {len(matching):,}; filter to find the others"
                if hidden else f"{len(shown):,} of {len(rows):,}" if text else "")
        if self.note.text != note:
            self.note.text = note
        return shown


def fit(table: Any, rows: int) -> None:
    """Make ``table`` tall enough for ``rows`` rows (at least one)."""
    table.height = HEADER + ROW * max(rows, 1)
