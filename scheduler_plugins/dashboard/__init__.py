"""The federation page of the hub's Dask dashboard (``/federation``).

:class:`DashboardPlugin` mounts a Bokeh document on the scheduler's own HTTP server the
way distributed mounts its pages and adds "Federation" to the navigation bar. The page
updates live:

* **Sites**: status, connectivity (direct, or outbound-only with the bytes the relay
  carried), workers, batch jobs, threads, memory used / limit, datasets, methods.
* **Tasks per site** right now (processing, queued at the site, in memory, erred) and
  the progress of the site's current computation (tasks done since it got busy).
* **Computations**, most recent first, with tasks per site and inputs fetched.
* **Traffic**: source × destination heat maps of bytes across site borders,
  cumulative and for the last minute.
* **Catalog**: datasets, shared methods, published results.

==========================  ===============================================================
:mod:`.plugin`              the scheduler plugin: sampling, erred tasks, mounting the page
:mod:`.history`             the traffic history model and its periodic sampler
:mod:`.tasks`               the tasks-per-site model (counts, erred, progress)
:mod:`.page`                :data:`~.page.COMPONENTS` in order, laid out and refreshed
:mod:`.mount`               the Bokeh document and its place on the dashboard
:mod:`.components`          one class per table or plot (like distributed's components)
==========================  ===============================================================
"""

from __future__ import annotations

from .history import TrafficHistory
from .plugin import DashboardPlugin

__all__ = ["DashboardPlugin", "TrafficHistory"]
