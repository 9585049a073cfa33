"""How federation objects show themselves: readable text reprs and Jupyter HTML.

The HTML follows distributed's ``Client._repr_html_`` (an icon square, a title, a grey
subtitle, tables, collapsible details), so a notebook shows a federation the way it
shows a Dask client. Everything shown is escaped; nothing here calls the hub except
:func:`federation_html`/:func:`federation_text`, which ask for the sites once.
"""

from __future__ import annotations

from html import escape
from typing import TYPE_CHECKING, Any

from dask.utils import format_bytes

if TYPE_CHECKING:
    from .catalog import DatasetInfo
    from .client import Federation
    from .protocol import MethodInfo
    from .traffic import TrafficRecord

#: colours of a site's status, as the federation page uses them
STATUS_COLOURS = {"connected": "#2ca02c", "no workers": "#ff7f0e", "offline": "#d62728"}


def _box(title: str, subtitle: str, body: str, colour: str = "#e1e1e1") -> str:
    return (
        "<div>"
        f'<div style="width: 24px; height: 24px; background-color: {colour}; '
        'border: 3px solid #9D9D9D; border-radius: 5px; position: absolute;"> </div>'
        '<div style="margin-left: 48px;">'
        f'<h3 style="margin-bottom: 0px;">{escape(title)}</h3>'
        f'<p style="color: #9D9D9D; margin-bottom: 0px;">{escape(subtitle)}</p>'
        f"{body}</div></div>"
    )


def _table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f'<th style="text-align: left;">{escape(h)}</th>' for h in header)
    body = "".join(
        "<tr>" + "".join(f'<td style="text-align: left;">{escape(str(c))}</td>' for c in row)
        + "</tr>"
        for row in rows
    )
    return f'<table style="width: 100%; text-align: left;"><tr>{head}</tr>{body}</table>'


def _dims(dims: tuple[str, ...] | dict[str, int], shape: tuple[int, ...] = ()) -> str:
    pairs = dims.items() if isinstance(dims, dict) else zip(dims, shape)
    return ", ".join(f"{d}: {n}" for d, n in pairs)


# -- DatasetInfo ----------------------------------------------------------------------------


def _variable_rows(info: DatasetInfo) -> list[list[Any]]:
    return [
        [v.name, f"({', '.join(v.dims)})", v.dtype, str(tuple(v.chunks)), format_bytes(v.nbytes)]
        for v in info.variables.values() if not v.is_coord
    ]


def dataset_text(info: DatasetInfo) -> str:
    """Several lines, like xarray's repr: dims, variables with chunks and size, policy."""
    lines = [f"<DatasetInfo {info.ref!r}> {info.description}".rstrip()]
    lines.append(f"Dimensions:  ({_dims(info.dims)})")
    lines.append("Data variables:")
    for name, dims, dtype, chunks, size in _variable_rows(info):
        lines.append(f"    {name}  {dims} {dtype}  chunks {chunks}  {size}")
    coords = [v.name for v in info.variables.values() if v.is_coord]
    lines.append(f"Coordinates: {', '.join(coords) or 'none'}")
    egress = info.egress
    if info.egress == "aggregated" and info.max_egress_bytes is not None:
        egress += f" (at most {format_bytes(info.max_egress_bytes)} per result)"
    extra = f"; replica of {info.replica_of}" if info.replica_of else ""
    lines.append(
        f"Size: {format_bytes(info.nbytes)}; egress: {egress}; version {info.version[:12]}{extra}"
    )
    return "\n".join(lines)


def dataset_html(info: DatasetInfo) -> str:
    coords = [
        [v.name, f"({', '.join(v.dims)})", v.dtype, _dims(v.dims, v.shape)]
        for v in info.variables.values() if v.is_coord
    ]
    attrs = "".join(
        f"<dt>{escape(str(k))}</dt><dd>{escape(str(v))}</dd>" for k, v in info.attrs.items()
    )
    body = (
        _table(["", ""], [["Dimensions", _dims(info.dims)], ["Size", format_bytes(info.nbytes)],
                          ["Egress", info.egress], ["Version", info.version[:12]]]
               + ([["Replica of", info.replica_of]] if info.replica_of else []))
        + "<h4>Data variables</h4>"
        + _table(["name", "dims", "dtype", "chunks", "size"], _variable_rows(info))
        + f"<details><summary>Coordinates ({len(coords)})</summary>"
        + _table(["name", "dims", "dtype", "shape"], coords) + "</details>"
        + f"<details><summary>Attributes ({len(info.attrs)})</summary><dl>{attrs}</dl></details>"
    )
    return _box(f"Dataset {info.ref}", info.description, body)


# -- MethodInfo -----------------------------------------------------------------------------


def method_text(info: MethodInfo) -> str:
    head = f"<MethodInfo {info.ref!r}: {info.kind} {info.name}{info.signature}>"
    doc = info.doc.strip()
    return f"{head}\n{doc}" if doc else head


def method_html(info: MethodInfo) -> str:
    rows = [
        [p.name, p.annotation or "", repr(p.default) if p.has_default else "(required)"]
        for p in info.parameters
    ]
    body = (
        f"<pre>{escape(info.name + info.signature)}</pre>"
        + _table(["parameter", "type", "default"], rows)
        + f"<details><summary>Documentation</summary><pre>{escape(info.doc)}</pre></details>"
    )
    return _box(f"{info.kind.capitalize()} {info.ref}", f"runs at site {info.site}", body)


# -- TrafficRecord --------------------------------------------------------------------------


def traffic_text(record: TrafficRecord) -> str:
    rows = record.bytes
    tasks = ", ".join(f"{s}: {n}" for s, n in record.tasks.items()) or "none"
    lines = [
        f"<TrafficRecord: {format_bytes(record.total)} across site borders in "
        f"{int(rows['transfers'].sum())} transfer(s); tasks run per site: {tasks}>"
    ]
    lines += [
        f"  {r.source} -> {r.destination}: {format_bytes(int(r.bytes))} "
        f"({int(r.transfers)} transfer(s))"
        for r in rows.itertuples()
    ]
    return "\n".join(lines)


def traffic_html(record: TrafficRecord) -> str:
    rows = [
        [r.source, r.destination, format_bytes(int(r.bytes)), format_bytes(int(r.nbytes)),
         int(r.transfers)]
        for r in record.bytes.itertuples()
    ]
    tasks = [[site, n] for site, n in record.tasks.items()]
    body = (
        _table(["source", "destination", "bytes (wire)", "nbytes (memory)", "transfers"], rows)
        + "<h4>Tasks run per site</h4>" + _table(["site", "tasks"], tasks)
    )
    return _box("Traffic", f"{format_bytes(record.total)} across site borders", body)


# -- Federation -----------------------------------------------------------------------------


def federation_page(fed: Federation) -> str | None:
    """The hub's federation page (next to Dask's ``/status``), if it has a dashboard."""
    try:
        link = fed.client.dashboard_link
    except Exception:  # no dashboard service on this hub
        return None
    return link.removesuffix("/status") + "/federation" if link else None


def _sites(fed: Federation) -> dict[str, dict[str, Any]] | None:
    try:
        return fed.sites()
    except Exception:  # closed or unreachable: show what is known locally
        return None


def federation_text(fed: Federation) -> str:
    address = fed.client.scheduler.address
    sites = _sites(fed)
    if sites is None:
        return f"<Federation {address}: not connected>"
    states = ", ".join(f"{name} ({s['status']})" for name, s in sites.items()) or "none yet"
    datasets = sum(len(s["datasets"]) for s in sites.values())
    page = federation_page(fed)
    return (
        f"<Federation {address}: sites {states}; {datasets} dataset(s)"
        + (f"; page {page}>" if page else ">")
    )


def federation_html(fed: Federation) -> str:
    address = fed.client.scheduler.address
    sites = _sites(fed)
    page = federation_page(fed)
    link = (
        f'<p><strong>Federation page: </strong><a href="{escape(page)}" target="_blank">'
        f"{escape(page)}</a></p>" if page else ""
    )
    if sites is None:
        return _box("Federation", address, "<p>Not connected.</p>")
    rows = []
    for name, s in sites.items():
        colour = STATUS_COLOURS.get(s["status"], "#9D9D9D")
        rows.append(
            "<tr>"
            f'<td style="text-align: left;">{escape(name)}</td>'
            f'<td style="text-align: left; color: {colour};">{escape(s["status"])}</td>'
            + "".join(
                f'<td style="text-align: left;">{escape(str(c))}</td>'
                for c in (len(s["workers"]), s["nthreads"],
                          f"{format_bytes(s['memory_used'])} / {format_bytes(s['memory_limit'])}",
                          ", ".join(f"{name}/{d}" for d in s["datasets"]), s["tasks_done"])
            )
            + "</tr>"
        )
    header = "".join(
        f'<th style="text-align: left;">{h}</th>' for h in
        ("site", "status", "workers", "threads", "memory used / limit", "datasets",
         "tasks run (since the hub started)")
    )
    rows_html = "".join(rows)
    table = f'<table style="width: 100%; text-align: left;"><tr>{header}</tr>{rows_html}</table>'
    body = (
        link + f"<details open><summary><strong>Sites ({len(sites)})</strong></summary>"
        f"{table}</details>"
        f"<details><summary><strong>Dask client</strong></summary>"
        f"{fed.client._repr_html_()}</details>"
    )
    return _box("Federation", address, body, colour="#4e79a7")
