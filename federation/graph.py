"""Finding what ties a task to a site, inside dask task specs (also fused ones).

Five functions only ever run at a particular site (:mod:`federation.sitecalls`):
``read_chunk`` (reads a dataset), ``describe_snapshot`` (describes an old Icechunk
version of one), ``run_method`` (runs a shared method), ``write_result`` (stores a
result) and ``standing_task`` (keeps a standing result up to date). Their first argument
is the ``site/...`` reference; the routing plugin and result provenance both look for
them. They are recognised by :func:`federation.protocol.site_call_kind`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from dask._task_spec import DataNode, Task

from .protocol import Kind, site_call_kind, site_of_ref

Binding = tuple[Kind, str]

#: what may hold a call; the leaves of a spec (strings, slices, numbers, TaskRefs) are
#: skipped without a recursive call: the hub walks every task of every graph
_NESTED = (Task, DataNode, dict, list, tuple)


def bindings(node: Any) -> Iterator[Binding]:
    """``(kind, reference)`` for every site-bound call inside a task spec."""
    if isinstance(node, Task):
        kind = site_call_kind(node.func)
        # a reference computed by another task is not one the hub can authorise: unsigned,
        # the call is refused at the site (federation.capability)
        if kind is not None and node.args and isinstance(node.args[0], str):
            yield kind, node.args[0]
        children: Any = (*node.args, *node.kwargs.values())
    elif isinstance(node, DataNode):
        children = (node.value,)
    elif isinstance(node, dict):
        children = node.values()
    elif isinstance(node, (list, tuple)):
        children = node
    else:
        return
    for child in children:
        if isinstance(child, _NESTED):
            yield from bindings(child)


def read_versions(node: Any) -> Iterator[tuple[str, str]]:
    """``(reference, version)`` of every pinned read inside a task spec."""
    if isinstance(node, Task):
        if (getattr(node.func, "__name__", None) == "read_chunk"
                and site_call_kind(node.func) == "dataset"
                and len(node.args) > 4 and isinstance(node.args[4], str)):
            yield node.args[0], node.args[4]
        children: Any = (*node.args, *node.kwargs.values())
    elif isinstance(node, DataNode):
        children = (node.value,)
    elif isinstance(node, (dict, list, tuple)):
        children = node.values() if isinstance(node, dict) else node
    else:
        return
    for child in children:
        if isinstance(child, _NESTED):
            yield from read_versions(child)


def graph_uses(obj: Any) -> dict[str, Any]:
    """Datasets and methods a dask collection uses, and its site-bound tasks per site."""
    from collections import Counter

    datasets: set[str] = set()
    methods: set[str] = set()
    sites: Counter[str] = Counter()
    if hasattr(obj, "__dask_graph__") and obj.__dask_graph__() is not None:
        for node in dict(obj.__dask_graph__()).values():
            for kind, ref in bindings(node):
                (datasets if kind == "dataset" else methods).add(ref)
                sites[site_of_ref(ref)] += 1
    return {"datasets": sorted(datasets), "methods": sorted(methods), "sites": dict(sites)}
