"""The sites table: status, connectivity, workers, batch jobs, threads, memory, catalog."""

from __future__ import annotations

from typing import Any

from bokeh.models import NumberFormatter

from .base import Component, PageView, fit, fmt_bytes, set_data, table


def connectivity(site: dict[str, Any]) -> str:
    """'direct', or 'outbound-only, 3 MiB relayed'."""
    if site.get("connectivity") != "outbound-only":
        return "direct"
    return f"outbound-only, {fmt_bytes(site.get('relayed_bytes', 0))} relayed"


def batch_jobs(jobs: dict[str, Any] | None) -> str:
    """A batch site's workers: 'slurm: 2 running, 1 pending (Resources), 0-4 adaptive'."""
    if not jobs:
        return ""
    text = f"{jobs['running']} running, {jobs['pending']} pending"
    if jobs.get("pending_reason"):
        text += f" ({jobs['pending_reason']})"
    if jobs.get("adaptive"):
        text += f", {jobs['minimum']}-{jobs['maximum']} adaptive"
    if jobs.get("failed"):
        text += f", {jobs['failed']} failed" + (" (stopped)" if jobs.get("halted") else "")
    return f"{jobs['type']}: {text}"


class SitesTable(Component):
    name = "sites"
    heading = "Sites"

    def __init__(self) -> None:
        self.source, self.root = table("sites", [
            ("site", "Site"), ("status", "Status"), ("connectivity", "Connectivity", 200),
            ("workers", "Workers"), ("jobs", "Batch jobs", 220), ("nthreads", "Threads"),
            ("memory", "Memory used / limit"), ("datasets", "Datasets", 220),
            ("methods", "Methods", 220),
            ("tasks_done", "Tasks run (all, since the hub started)", 230),
        ], formatters={"tasks_done": NumberFormatter(format="0,0")})

    def update(self, view: PageView) -> None:
        sites = view.sites.values()
        set_data(self.source, {
            "site": list(view.sites),
            "status": [s["status"] for s in sites],
            "connectivity": [connectivity(s) for s in sites],
            "workers": [len(s["workers"]) for s in sites],
            "jobs": [batch_jobs(s.get("jobs")) for s in sites],
            "nthreads": [s["nthreads"] for s in sites],
            "memory": [f"{fmt_bytes(s['memory_used'])} / {fmt_bytes(s['memory_limit'])}"
                       for s in sites],
            "datasets": [", ".join(s["datasets"]) for s in sites],
            "methods": [", ".join(s.get("methods", [])) for s in sites],
            "tasks_done": [s["tasks_done"] for s in sites],
        })
        fit(self.root, len(view.sites))
