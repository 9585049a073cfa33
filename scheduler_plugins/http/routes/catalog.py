"""``GET catalog`` and ``GET datasets/{site}/{name}``: datasets and published results."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .. import records
from ..base import BaseHandler
from ..codec import to_jsonable
from ..spec import Operation, Route

if TYPE_CHECKING:
    from federation.catalog import DatasetInfo

    from ...state import FederationState


def result_names(state: FederationState) -> set[str]:
    """``site/name`` of every published result."""
    return {f"{record.name}/{name}" for record in state.sites.values() for name in record.results}


def dataset_json(info: DatasetInfo) -> dict[str, Any]:
    """A dataset's metadata as xarray shows it at its site: real dtypes, calendars,
    attrs, encodings, and the values of the coordinates the catalog carries."""
    from federation.lazy import catalog_coordinates

    coords = catalog_coordinates(info)
    variables = []
    for v in info.variables.values():
        d: dict[str, Any] = {
            "name": v.name, "dims": list(v.dims), "shape": list(v.shape), "dtype": v.dtype,
            "calendar": v.calendar, "chunks": list(v.chunks), "nbytes": v.nbytes,
            "attrs": to_jsonable(v.attrs), "encoding": to_jsonable(v.encoding),
            "is_coord": v.is_coord,
        }
        if v.name in coords.variables:
            d["values"] = to_jsonable(coords.variables[v.name].values)["data"]
        variables.append(d)
    return {
        "dataset": info.ref, "site": info.site, "name": info.name,
        "description": info.description, "version": info.version, "dims": info.dims,
        "nbytes": info.nbytes, "data_vars": info.data_vars, "attrs": to_jsonable(info.attrs),
        "variables": variables,
    }


class CatalogHandler(BaseHandler):
    operations = {"get": Operation(
        "Datasets and published results", {200: (records.Catalog, "the catalog")},
    )}

    def get(self) -> None:
        results = result_names(self.state)
        rows = [
            {**info.summary(), "kind": "result" if ref in results else "dataset"}
            for ref, info in sorted(self.state.datasets().items()) if self.granted(ref)
        ]
        self.send_json({"datasets": rows})


class DatasetHandler(BaseHandler):
    operations = {"get": Operation(
        "Metadata of one dataset", {200: (records.Dataset, "the dataset")},
        errors=(401, 403, 404),
    )}

    def get(self, site: str, name: str) -> None:
        info = self.state.dataset(f"{site}/{name}")  # raises with close matches
        self.check_grant(info.ref)
        out = dataset_json(info)
        out["kind"] = "dataset"
        if info.ref in result_names(self.state):
            out["kind"] = "result"
            out["provenance"] = self.state.sites[info.site].results[info.name][1]
        self.send_json(out)


routes: list[Route] = [
    Route("/catalog", CatalogHandler),
    Route("/datasets/{site}/{name}", DatasetHandler, patterns={"name": ".+"}),
]
