"""The scheduler plugin that mounts the HTTP API on the hub's dashboard server."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from distributed import SchedulerPlugin

from federation.protocol import API_PATH

from .auth import Tokens
from .common import http_prefix
from .jobs import JobRunner
from .routes import ROUTES, index, static

if TYPE_CHECKING:
    from distributed.scheduler import Scheduler

    from ..state import FederationState


class HttpApiPlugin(SchedulerPlugin):
    """Adds the HTTP API, ``client.js`` and the explorer page to the dashboard server."""

    name = "federation-http"

    def __init__(self, state: FederationState):
        self.state = state
        self.tokens = Tokens()
        self.runner = JobRunner(state)
        #: the dashboard's URL prefix, known once started
        self.prefix = ""

    @property
    def scheduler(self) -> Scheduler:
        return self.state.scheduler

    async def start(self, scheduler: Scheduler) -> None:
        app = getattr(scheduler, "http_application", None)
        if app is None:
            return
        self.prefix = http_prefix(scheduler)
        app.add_handlers(r".*$", self.routes(self.prefix))

    def routes(self, prefix: str) -> list[tuple]:
        """Tornado rules of every route below ``prefix``."""
        api, kw = f"{prefix}/{API_PATH}", {"api": self}
        return [
            *((route.pattern(api), route.handler, kw) for route in [*ROUTES, index.fallback]),
            *((f"{prefix}/federation{pattern}", handler, kw) for pattern, handler in static.pages),
        ]

    def transition(self, key: Any, start: str, finish: str, *args: Any, **kwargs: Any) -> None:
        if self.runner.watching:  # most transitions are no job's: skip the look-up
            self.runner.transition(key, finish)

    async def close(self) -> None:
        await self.runner.close()
