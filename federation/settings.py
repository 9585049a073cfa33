"""dask-federation's dask config defaults: ``federation.yaml`` loaded into ``dask.config``.

As distributed does with ``distributed.yaml`` (``distributed/config.py``): the defaults are
merged under any user setting, so code calls ``dask.config.get("federation.…")`` without
inline defaults. ``federation-schema.yaml`` describes every key.
"""

from __future__ import annotations

from pathlib import Path

import dask.config
import yaml

DEFAULTS_FILE = Path(__file__).with_name("federation.yaml")
SCHEMA_FILE = Path(__file__).with_name("federation-schema.yaml")

with DEFAULTS_FILE.open() as f:
    defaults = yaml.safe_load(f)

dask.config.update_defaults(defaults)


def reference_table() -> str:
    """The README's settings table (markdown), generated from the defaults and the schema.

    ``python -m federation.settings`` prints it; a test keeps the README equal to it.
    """
    schema = yaml.safe_load(SCHEMA_FILE.read_text())
    rows = ["| key | default | meaning |", "| --- | --- | --- |"]

    def walk(values: dict, props: dict, prefix: str) -> None:
        for key, value in values.items():
            name, spec = f"{prefix}.{key}", props[key]
            if "properties" in spec:  # a group of keys (a dict-valued key is a leaf)
                walk(value, spec["properties"], name)
            else:
                shown = "null" if value is None else yaml.safe_dump(value).split("\n")[0]
                rows.append(f"| `{name}` | `{shown}` | {' '.join(spec['description'].split())} |")

    walk(defaults["federation"], schema["properties"]["federation"]["properties"], "federation")
    return "\n".join(rows)


if __name__ == "__main__":
    print(reference_table())
