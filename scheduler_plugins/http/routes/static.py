"""The JavaScript client (``client.js``, ``client.d.ts``) and the explorer page.

Served next to the API, at ``<prefix>/federation/``, without a token: code that holds no
site data (the explorer asks for a token itself).
"""

from __future__ import annotations

from pathlib import Path

import federation

from ..base import BaseHandler
from ..errors import ApiError

JS_DIR = Path(federation.__file__).parent / "js"


class StaticHandler(BaseHandler):
    """One of the files of :data:`TYPES`, from the installed ``federation/js``."""

    public = True
    TYPES = {
        "client.js": "text/javascript; charset=utf-8",
        "client.d.ts": "application/typescript; charset=utf-8",
        "explorer": "text/html; charset=utf-8",
    }
    FILES = {"explorer": "explorer.html"}

    def get(self, name: str) -> None:
        path = JS_DIR / self.FILES.get(name, name)
        if not path.exists():
            raise ApiError(404, "not_found", f"{path.name} is not installed with this hub")
        self.set_header("Content-Type", self.TYPES[name])
        self.set_header("Cache-Control", "no-cache")
        self.finish(path.read_bytes())


#: URL patterns below ``<prefix>/federation`` (not API routes: no OpenAPI entry)
pages: list[tuple[str, type]] = [
    (r"/(client\.js|client\.d\.ts)", StaticHandler),
    (r"/(explorer)(?:\.html)?", StaticHandler),
]
