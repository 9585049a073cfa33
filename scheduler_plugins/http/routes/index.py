"""The API's index, its OpenAPI document and the answer to unknown API paths."""

from __future__ import annotations

from typing import Any

import federation

from ..base import BaseHandler
from ..errors import ApiError
from ..openapi import openapi_document
from ..spec import Route


class IndexHandler(BaseHandler):
    def get(self) -> None:
        from . import ROUTES

        self.send_json({
            "version": "v1",
            "dask_federation": getattr(federation, "__version__", None),
            "openapi": f"{self.base}/openapi.json",
            "routes": [f"{self.base}{r.path}" for r in ROUTES if not r.hidden],
        })


class OpenApiHandler(BaseHandler):
    public = True

    def get(self) -> None:
        self.send_json(openapi_document(self.api.prefix))


class NotFoundHandler(BaseHandler):
    def get(self, *args: Any) -> None:
        raise ApiError(
            404, "not_found", f"no API route {self.request.path!r}; see {self.base}/openapi.json",
        )

    post = delete = get


routes: list[Route] = [
    Route("/", IndexHandler, hidden=True, regex="/?"),
    Route("/openapi.json", OpenApiHandler, hidden=True),
]
#: last: anything else below the API root
fallback = Route("/{rest}", NotFoundHandler, patterns={"rest": ".*"}, hidden=True)
