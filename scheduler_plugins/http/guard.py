"""One access token for every page of the hub's HTTP port, and the API's request rate.

With ``federation.http.tokens`` (or ``tokens-file``) configured, every request to the
dashboard port needs a valid token — distributed's own pages too (``/status``,
``/info/...`` with worker logs and call stacks, ``/individual-*``, ``/json/*``,
``/sitemap.json``, Bokeh's websockets, the federation page). Not checked here:

* ``/health``, for load balancers and Kubernetes probes (it answers ``ok``, nothing else);
* the federation's static files ``client.js``, ``client.d.ts`` and ``explorer`` (code that
  holds no site data; the explorer asks for a token itself) and
  ``api/v1/openapi.json`` (the API's description);
* the API under ``federation/api/v1/``: its own handlers check the same tokens
  (:func:`.auth.api_caller`) and answer with JSON errors.

A request presents the token as ``Authorization: Bearer TOKEN``, as the password of HTTP
Basic authentication (any user name), or as the cookie ``federation-token``. Opening any
page with ``?token=TOKEN`` once sets that cookie (HttpOnly, SameSite=Strict) and
redirects to the page without it, so a browser (and the dashboard's websockets) can use
the dashboard; without a token a page answers 401 with a small form asking for it.

Requests to the API are also limited per caller (its token, else its IP address) to
``federation.fair-share.http-per-second`` (50; bursts of ``http-burst``, 200): more
answer 429 with ``Retry-After``.

Installed by wrapping ``find_handler`` of distributed's ``RoutingApplication``, which
every request on the port (its own routes, its Bokeh applications, ours) goes through.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from distributed import SchedulerPlugin
from tornado import httputil, web

from federation.protocol import API_PATH

from ..fairshare import setting
from ..ratelimit import Buckets
from .auth import COOKIE, Tokens, presented_token, valid
from .common import http_prefix

if TYPE_CHECKING:
    from distributed.scheduler import Scheduler

#: paths (after the dashboard prefix) served without a token; see the module docstring
PUBLIC = (
    "/health", "/federation/client.js", "/federation/client.d.ts", "/federation/explorer",
    "/federation/explorer.html", f"/{API_PATH}/openapi.json",
)


class LoginHandler(web.RequestHandler):
    """``?token=`` was valid: keep it in a cookie and show the page without it."""

    def initialize(self, prefix: str) -> None:
        self.prefix = prefix

    def get(self, *args: Any) -> None:
        query = {k: v[-1] for k, v in self.request.query_arguments.items() if k != "token"}
        self.set_cookie(
            COOKIE, self.get_query_argument("token"), path=self.prefix or "/", httponly=True,
            samesite="Strict", secure=self.request.protocol == "https",
        )
        target = self.request.path + (f"?{urlencode(query)}" if query else "")
        # a path relative to this host only: never an open redirect
        self.redirect("/" + target.lstrip("/"))


class UnauthorizedHandler(web.RequestHandler):
    """401 for every method, with a form to enter the token (pages) or a short text."""

    def initialize(self, wrong: bool) -> None:
        self.wrong = wrong

    def prepare(self) -> None:
        self.set_status(401)
        self.set_header("WWW-Authenticate", 'Basic realm="dask-federation"')
        self.set_header("Cache-Control", "no-store")
        what = "the token is not valid" if self.wrong else "this hub requires an access token"
        if "text/html" in self.request.headers.get("Accept", ""):
            self.set_header("Content-Type", "text/html; charset=utf-8")
            self.finish(
                "<!doctype html><title>dask-federation: token required</title>"
                f"<p>{html.escape(what)} (federation.http.tokens).</p>"
                f"<form method='get' action='{html.escape(self.request.path, quote=True)}'>"
                "<input name='token' type='password' placeholder='access token' autofocus>"
                "<button>Open</button></form>"
            )
        else:
            self.set_header("Content-Type", "text/plain; charset=utf-8")
            self.finish(f"401: {what}; send 'Authorization: Bearer <token>' "
                        "(federation.http.tokens)\n")


class TooManyRequestsHandler(web.RequestHandler):
    """429 for every method: the caller is over its request rate."""

    def initialize(self, retry: float) -> None:
        self.retry = retry

    def prepare(self) -> None:
        self.set_status(429)
        self.set_header("Retry-After", str(max(1, round(self.retry))))
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.finish("429: too many requests (federation.fair-share.http-per-second); retry "
                    "later\n")


class WebAuthPlugin(SchedulerPlugin):
    """Requires ``federation.http.tokens`` on every page of the hub's HTTP port."""

    name = "federation-web-auth"

    def __init__(self) -> None:
        self.tokens = Tokens()
        self.rates = Buckets(lambda: float(setting("http-per-second")),
                             lambda: float(setting("http-burst")))

    async def start(self, scheduler: Scheduler) -> None:
        app = getattr(scheduler, "http_application", None)
        if app is None:
            return
        prefix = http_prefix(scheduler)
        public = {prefix + p for p in PUBLIC}
        api = f"{prefix}/{API_PATH}/"
        find_handler = app.find_handler

        def guarded(request: httputil.HTTPServerRequest, **kwargs: Any) -> Any:
            tokens = self.tokens.get()
            path = request.path.rstrip("/") or "/"
            token = presented_token(request)
            # the API's calls cost the hub work; pages pull dozens of static files each
            if request.path.startswith(api):
                key = token if tokens is not None and valid(token, tokens) else request.remote_ip
                wait = self.rates.delay(str(key))
                if wait > 0:
                    self.rates.refund(str(key))
                    return app.get_handler_delegate(
                        request, TooManyRequestsHandler, {"retry": wait}
                    )
            if tokens is None or path in public or request.path.startswith(api):
                return find_handler(request, **kwargs)
            if not valid(token, tokens):
                return app.get_handler_delegate(
                    request, UnauthorizedHandler, {"wrong": token is not None}
                )
            if request.method == "GET" and "token" in request.query_arguments:
                return app.get_handler_delegate(request, LoginHandler, {"prefix": prefix})
            return find_handler(request, **kwargs)

        app.find_handler = guarded
