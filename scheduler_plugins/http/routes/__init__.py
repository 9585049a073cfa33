"""The API's routes, one module per resource (like ``distributed/http/scheduler/*.py``).

====================================  ======================================================
``GET  sites``                        sites: status, workers, threads, memory, datasets, methods
``GET  catalog``                      datasets and published results, one row each
``GET  datasets/{site}/{name}``       metadata of one dataset (variables, coordinates, attrs)
``GET  methods``                      shared methods and workflows
``GET  methods/{site}/{name}``        one method: signature, docstring, JSON schema of arguments
``POST methods/{site}/{name}``        call it with a JSON object of arguments
``GET  jobs/{id}``                    status, progress and result of a call; ``DELETE`` cancels
``GET  traffic``                      bytes across site borders; ``?window=60``: last minute
``GET  openapi.json``                 OpenAPI 3.1 description (no token needed)
====================================  ======================================================

All below ``<dashboard prefix>/federation/api/v1/``; :mod:`.static` serves ``client.js``,
``client.d.ts`` and ``explorer`` beside it. A new resource is a module ending with
``routes: list[Route]``, added to :data:`ROUTES`.
"""

from __future__ import annotations

from ..spec import Route
from . import catalog, index, jobs, methods, sites, static, traffic

#: every API route, in matching order; the 404 fallback last
ROUTES: list[Route] = [
    *index.routes, *sites.routes, *catalog.routes, *methods.routes, *jobs.routes,
    *traffic.routes,
]

__all__ = ["ROUTES", "index", "static"]
