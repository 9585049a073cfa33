"""The federation page on the scheduler's dashboard, mounted the way distributed mounts
its own pages (a :func:`distributed.dashboard.core.BokehApplication` added to
``scheduler.http_application``) and linked in the navigation bar."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tornado.ioloop import IOLoop

if TYPE_CHECKING:
    from distributed.scheduler import Scheduler

logger = logging.getLogger(__name__)

PAGE = "federation"


def federation_doc(scheduler: Scheduler, extra: dict[str, Any], doc: Any) -> None:
    """Bokeh document of ``/federation`` (called by distributed's BokehApplication)."""
    from distributed.dashboard.components.scheduler import BOKEH_THEME, env

    from .page import FederationPage
    from .plugin import DashboardPlugin

    plugin = scheduler.plugins.get(DashboardPlugin.name)
    if plugin is None:  # page mounted without the plugin: give it a private one
        from .. import install

        plugin = DashboardPlugin(install(scheduler))
    page = FederationPage(scheduler, plugin)
    doc.title = "Dask: Federation"
    doc.add_root(page.root)
    doc.template = env.get_template("simple.html")
    doc.template_variables.update(extra)
    doc.theme = BOKEH_THEME

    def guarded(update: Callable[[], None]) -> Callable[[], None]:
        def callback() -> None:
            try:
                update()
            except Exception:
                logger.exception("Federation dashboard update failed")
        return callback

    doc.add_periodic_callback(guarded(page.update), 1000)
    doc.add_periodic_callback(guarded(page.update_slow), 2000)


def mount_page(scheduler: Scheduler) -> bool:
    """Add ``/federation`` to the scheduler's dashboard; False if it has none."""
    app = getattr(scheduler, "http_application", None)
    bokeh_apps = [a for a in getattr(app, "applications", ()) if hasattr(a, "app_paths")]
    if app is None or not bokeh_apps:
        return False  # no dashboard (or bokeh missing)
    if any(f"/{PAGE}" in a.app_paths or f"{a.prefix}/{PAGE}" in a.app_paths for a in bokeh_apps):
        return True
    from distributed.dashboard.core import BokehApplication
    from distributed.dashboard.scheduler import template_variables

    variables = template_variables(scheduler)  # memoized: shared by all dashboard pages
    if PAGE not in variables["pages"]:
        pages = variables["pages"]
        pages.insert(pages.index("status") + 1 if "status" in pages else len(pages), PAGE)
    prefix = bokeh_apps[0].prefix
    bokeh_app = BokehApplication(
        {f"/{PAGE}": federation_doc}, scheduler, prefix=prefix, template_variables=variables
    )
    app.add_application(bokeh_app)
    bokeh_app.initialize(IOLoop.current())
    bokeh_app.start()
    return True
