"""``GET traffic``: bytes that crossed site borders, all or of the last ``?window=`` s."""

from __future__ import annotations

import math
import time

from ...dashboard.plugin import DashboardPlugin
from ...traffic import TrafficPlugin
from .. import records
from ..base import BaseHandler
from ..errors import ApiError
from ..spec import Operation, Route


def window_seconds(window: str) -> float:
    """``?window=`` as seconds; 400 ``bad_request`` unless a positive finite number."""
    try:
        seconds = float(window)
        if not 0 < seconds < math.inf:  # also nan
            raise ValueError
    except ValueError:
        raise ApiError(
            400, "bad_request", f"window={window!r} is not a positive number of seconds"
        ) from None
    return seconds


class TrafficHandler(BaseHandler):
    operations = {"get": Operation(
        "Bytes that crossed site borders (source × destination)",
        {200: (records.Traffic, "the ledger")}, errors=(400, 401, 403),
        query=records.TrafficQuery,
    )}

    async def get(self) -> None:
        window = self.get_query_argument("window", None)
        traffic = self.state.plugin(TrafficPlugin)
        if window is None:
            await traffic.collect()
            rows, since = traffic.ledger(), None
        else:
            seconds = window_seconds(window)
            rows, since = self.state.plugin(DashboardPlugin).history.window(seconds)
        sites = set(self.state.worker_site.values()) | set(self.state.sites)
        # only traffic between sites the user holds a grant at (and clients)
        rows = [r for r in rows if all(e not in sites or self.granted_site(e) for e in r[:2])]
        self.send_json({
            "columns": ["source", "destination", "bytes", "nbytes", "transfers"],
            "rows": rows,
            "total": sum(r[2] for r in rows),
            "tasks": {s: n for s, n in self.state.tasks_done.items() if self.granted_site(s)},
            "window": None if window is None else float(window),
            "since": since,
            "time": time.time(),
        })


routes: list[Route] = [Route("/traffic", TrafficHandler)]
