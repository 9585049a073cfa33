"""How a route module declares its routes and their OpenAPI operations.

Each module of :mod:`.routes` ends with ``routes: list[Route]`` (as distributed's
``distributed/http/scheduler/*.py`` end with ``routes``); a handler class lists its
methods' :class:`Operation` in ``operations``. :mod:`.openapi` builds the document from
these and from :mod:`.records`, so a route is described where it is written.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

#: URL pattern of one path segment of a name (a site, a method)
NAME = r"[A-Za-z0-9_.-]+"


@dataclass(frozen=True)
class Operation:
    """One method of a route, for the OpenAPI document.

    ``responses``: status -> (record, description); ``errors``: statuses answered with
    the ``Error`` record (401/403 on every route that needs a token); ``query``: a record
    whose fields are the query parameters; ``body``: the request body's record.
    """

    summary: str
    responses: dict[int, tuple[type[BaseModel], str]]
    errors: tuple[int, ...] = (401, 403)
    description: str = ""
    query: type[BaseModel] | None = None
    body: type[BaseModel] | None = None
    headers: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True)
class Route:
    """``path`` below the API root in OpenAPI form (``/methods/{site}/{name}``), its
    handler, and a URL pattern per path parameter (default: one name segment)."""

    path: str
    handler: type
    patterns: dict[str, str] = field(default_factory=dict)
    #: not in the OpenAPI document (the index, the document itself, the 404 fallback)
    hidden: bool = False
    #: the URL pattern, if not derived from ``path``
    regex: str | None = None

    @property
    def parameters(self) -> list[str]:
        return re.findall(r"{(\w+)}", self.path)

    def pattern(self, root: str) -> str:
        """The tornado URL pattern below ``root`` (path parameters as groups)."""
        regex = self.regex or self.path.replace(".", r"\.")
        for name in self.parameters:
            regex = regex.replace(f"{{{name}}}", f"({self.patterns.get(name, NAME)})")
        return root + regex
