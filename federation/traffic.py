"""Traffic records as a user sees them: ``with fed.traffic() as t: ...``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pandas as pd

COLUMNS = ["source", "destination", "bytes", "nbytes", "transfers"]


def _frame(snapshot: dict[str, Any] | None) -> pd.DataFrame:
    rows = snapshot["rows"] if snapshot else []
    return pd.DataFrame(rows, columns=COLUMNS).set_index(["source", "destination"])


class TrafficRecord:
    """Bytes that crossed site borders, measured at the sending workers.

    Inside ``with fed.traffic() as t:`` it covers the block; otherwise it is
    cumulative since the hub started. ``bytes`` counts what was written on the wire
    (after any compression), ``nbytes`` the in-memory size of the objects sent.
    Destination ``"client"`` means results gathered through the hub.

    Attributes
    ----------
    total : int
        Wire bytes that crossed a site border (site→site and site→client).
    bytes : pandas.DataFrame
        Cross-border rows: source, destination, bytes, nbytes, transfers.
    within_sites : int
        Wire bytes moved between workers of the same site (not border crossings).
    tasks : dict
        Tasks run per site.
    """

    def __init__(self, fetch: Callable[[], dict[str, Any]]):
        self._fetch = fetch
        self._start: dict[str, Any] | None = None
        self._end: dict[str, Any] | None = None

    def __enter__(self) -> TrafficRecord:
        self._start = self._fetch()
        self._end = None
        return self

    def __exit__(self, *exc: object) -> None:
        self._end = self._fetch()

    def _snapshots(self) -> tuple[dict[str, Any] | None, dict[str, Any]]:
        return self._start, self._end if self._end is not None else self._fetch()

    @property
    def all(self) -> pd.DataFrame:
        """All rows, including transfers within a site."""
        start, end = self._snapshots()
        diff = _frame(end).sub(_frame(start), fill_value=0).astype("int64")
        return diff[diff["transfers"] > 0].reset_index()

    @property
    def bytes(self) -> pd.DataFrame:
        rows = self.all
        return rows[rows["source"] != rows["destination"]].reset_index(drop=True)

    @property
    def total(self) -> int:
        return int(self.bytes["bytes"].sum())

    @property
    def within_sites(self) -> int:
        rows = self.all
        return int(rows[rows["source"] == rows["destination"]]["bytes"].sum())

    @property
    def tasks(self) -> dict[str, int]:
        start, end = self._snapshots()
        before = start["tasks"] if start else {}
        return {
            site: n - before.get(site, 0)
            for site, n in sorted(end["tasks"].items())
            if n - before.get(site, 0)
        }

    @property
    def refusals(self) -> dict[str, int]:
        """Computations refused by egress policies, by "dataset (policy)"."""
        start, end = self._snapshots()
        before = (start or {}).get("refusals", {})
        return {
            k: n - before.get(k, 0) for k, n in sorted(end.get("refusals", {}).items())
            if n - before.get(k, 0)
        }

    def __repr__(self) -> str:
        from .display import traffic_text

        return traffic_text(self)

    def _repr_html_(self) -> str:
        from .display import traffic_html

        return traffic_html(self)
