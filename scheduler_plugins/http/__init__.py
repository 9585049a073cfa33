"""The hub's HTTP side: the JSON API, the JavaScript client and one token for the port.

All under the scheduler's own HTTP server (the dashboard port), below
``<dashboard prefix>/federation/``; the routes are listed in :mod:`.routes`.

==================  ===================================================================
:mod:`.plugin`      :class:`HttpApiPlugin`: mounts the routes, follows jobs' transitions
:mod:`.routes`      one module per resource (sites, catalog, methods, jobs, traffic …)
:mod:`.base`        the handlers' base: JSON answers, CORS, token, grants, JSON errors
:mod:`.auth`        access tokens (``federation.http.tokens``, ``tokens-file``), callers
:mod:`.guard`       :class:`WebAuthPlugin`: the token on every page of the port, rate limit
:mod:`.jobs`        the job runner: calls submitted through the hub's client, watched
:mod:`.arguments`   JSON in: the request body and array arguments as Python values
:mod:`.codec`       JSON out: results and metadata in JSON form (runs at sites, too)
:mod:`.errors`      :class:`ApiError` and which domain errors are answers (404, 400)
:mod:`.records`     pydantic records of every answer: the written contract
:mod:`.openapi`     the OpenAPI document, generated from the routes and the records
==================  ===================================================================

**Errors** are ``{"error": {"status": 404, "code": "not_found", "message": "..."}}``.
With tokens, every API request needs ``Authorization: Bearer <token>`` (401 without
one, 403 with a wrong one); a job is only visible with the token that started it; with
``federation.grants``, a call needs a grant for the method and for every dataset passed
by reference, as the token's user (403 ``no_grant``).
"""

from __future__ import annotations

from .guard import WebAuthPlugin
from .plugin import HttpApiPlugin

__all__ = ["HttpApiPlugin", "WebAuthPlugin"]
