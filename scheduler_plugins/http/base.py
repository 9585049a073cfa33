"""The base of every API route: JSON answers, CORS, the caller's token and grants."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from tornado import web

from federation.protocol import API_PATH

from .auth import api_caller
from .codec import to_jsonable
from .common import setting
from .errors import ApiError, domain_error

if TYPE_CHECKING:
    from .plugin import HttpApiPlugin


class BaseHandler(web.RequestHandler):
    """JSON responses, CORS, bearer-token checks and JSON errors.

    ``public`` routes need no token. After :meth:`prepare`, ``self.user`` is the token's
    user (for ``federation.grants``) and ``self.owner`` the owner of jobs it starts.
    """

    public = False

    def initialize(self, api: HttpApiPlugin) -> None:
        self.api = api
        self.state = api.state
        self.owner: str | None = None
        self.user: str | None = None

    @property
    def base(self) -> str:
        """The API's root URL path, e.g. ``/federation/api/v1``."""
        return f"{self.api.prefix}/{API_PATH}"

    def set_default_headers(self) -> None:
        origin = setting("allow-origin")
        if origin:
            self.set_header("Access-Control-Allow-Origin", origin)
            self.set_header("Access-Control-Allow-Headers", "Authorization, Content-Type, Prefer")
            self.set_header("Access-Control-Allow-Methods", "GET, POST, DELETE, OPTIONS")
            self.set_header("Access-Control-Expose-Headers", "Location")
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.set_header("Cache-Control", "no-store")

    def options(self, *args: Any) -> None:  # CORS preflight
        self.set_status(204)
        self.finish()

    def prepare(self) -> None:
        if self.request.method == "OPTIONS" or self.public:
            return
        caller = api_caller(self.request, self.api.tokens.get())
        self.user, self.owner = caller.user, caller.owner

    def check_grant(self, ref: str) -> None:
        """``federation.grants``, for the token's user, as the trust plugin checks graphs
        (the hub submits the call itself, so it must check here); 403 ``no_grant``."""
        if not self.granted(ref):
            who = f"user {self.user!r}" if self.user else "an anonymous caller"
            raise ApiError(
                403, "no_grant",
                f"{who} has no grant for {ref!r}; ask the federation's operators to add it "
                "to federation.grants",
            )

    def granted(self, ref: str) -> bool:
        """Whether the token's user may see and use ``ref`` (as the Python API filters)."""
        return self.state.grants.allows(self.user, ref)

    def granted_site(self, site: str) -> bool:
        """Whether the token's user holds some grant at ``site``."""
        return self.state.grants.allows_site(self.user, site)

    def send_json(self, value: Any, status: int = 200) -> None:
        """Answer ``value`` (JSON text as is, anything else through :func:`.to_jsonable`)."""
        self.set_status(status)
        self.finish(value if isinstance(value, str) else json.dumps(to_jsonable(value)))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        api = domain_error(exc) if exc is not None else None
        if api is None:
            code = "internal_error" if status_code >= 500 else "http_error"
            message = self._reason
            if exc is not None and not isinstance(exc, web.HTTPError):
                message = f"{type(exc).__name__}: {exc}"
            api = ApiError(status_code, code, message)
        self.set_status(api.status_code)
        self.set_header("Content-Type", "application/json; charset=utf-8")
        if api.status_code == 401:
            self.set_header("WWW-Authenticate", 'Bearer realm="dask-federation"')
        body = {"status": api.status_code, "code": api.code, "message": api.message, **api.extra}
        self.finish(json.dumps({"error": to_jsonable(body)}))

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        if domain_error(value) is not None:
            return  # an answer, not a server fault
        super().log_exception(typ, value, tb)
