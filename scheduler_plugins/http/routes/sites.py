"""``GET sites``: status and resources of every site."""

from __future__ import annotations

from .. import records
from ..base import BaseHandler
from ..spec import Operation, Route


class SitesHandler(BaseHandler):
    operations = {"get": Operation(
        "Sites with status and resources", {200: (records.SiteList, "the sites")},
    )}

    def get(self) -> None:
        grants = self.state.grants
        sites = [
            {"name": name, **grants.site_view(self.user, name, info)}
            for name, info in self.state.sites_info().items()
        ]
        self.send_json({"sites": sites})


routes: list[Route] = [Route("/sites", SitesHandler)]
