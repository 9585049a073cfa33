"""The catalog's tables: datasets, shared methods, published results."""

from __future__ import annotations

from federation.protocol import site_of_ref

from .base import CatalogRows, Component, PageView, fit, fmt_bytes, set_data, table


class DatasetsTable(Component):
    name = "datasets"
    heading = "Datasets"
    slow = True

    def __init__(self) -> None:
        self.source, self.table = table("datasets", [
            ("dataset", "Dataset"), ("kind", "Kind"), ("variables", "Variables"),
            ("dims", "Dimensions"), ("dtype", "Type"), ("size", "Size"),
            ("description", "Description"),
        ], height=160)
        self.rows = CatalogRows("datasets")
        self.root = self.rows.layout(self.table)

    def update(self, view: PageView) -> None:
        rows = self.rows.select(view.datasets)
        set_data(self.source, {
            "dataset": [ref for ref, _ in rows],
            "kind": ["result" if ref in view.results else "dataset" for ref, _ in rows],
            "variables": [", ".join(i.data_vars) for _, i in rows],
            "dims": [", ".join(f"{d}: {n}" for d, n in i.dims.items()) for _, i in rows],
            "dtype": [i.summary()["dtype"] for _, i in rows],
            "size": [fmt_bytes(i.nbytes) for _, i in rows],
            "description": [i.description for _, i in rows],
        })
        fit(self.table, len(rows))


class MethodsTable(Component):
    name = "methods"
    heading = "Shared methods"
    slow = True

    def __init__(self) -> None:
        self.source, self.root = table("methods", [
            ("method", "Method"), ("kind", "Kind"), ("signature", "Signature"),
            ("summary", "Summary"),
        ])

    def update(self, view: PageView) -> None:
        methods = sorted(view.state.methods().items())
        set_data(self.source, {
            "method": [ref for ref, _ in methods],
            "kind": [m.kind for _, m in methods],
            "signature": [f"{m.name}{m.signature}" for _, m in methods],
            "summary": [m.summary for _, m in methods],
        })
        fit(self.root, len(methods))


class ResultsTable(Component):
    """Results published at sites, and datasets published on the hub
    (``Client.publish_dataset``)."""

    name = "results"
    heading = "Published results"
    slow = True

    def __init__(self) -> None:
        self.source, self.root = table("results", [
            ("result", "Published result"), ("source", "Stored"),
            ("published_by", "Published by"), ("published_at", "When"),
        ], height=120)

    def update(self, view: PageView) -> None:
        published = [
            (ref, "site " + site_of_ref(ref), str(p.get("published_by", "")),
             str(p.get("published_at", "")))
            for ref, p in sorted(view.results.items())
        ]
        publish_ext = view.scheduler.extensions.get("publish")
        for name in sorted(map(str, getattr(publish_ext, "datasets", {}) or {})):
            published.append((name, "hub (Client.publish_dataset)", "", ""))
        columns = ("result", "source", "published_by", "published_at")
        set_data(self.source, {c: [p[i] for p in published] for i, c in enumerate(columns)})
        fit(self.root, len(published))
