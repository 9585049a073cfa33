"""federation.yaml: defaults valid against their schema, loaded into dask.config, documented."""

from __future__ import annotations

from pathlib import Path

import dask.config
import jsonschema
import yaml

from federation import settings

README = Path(__file__).parents[2] / "README.md"


def _leaves(tree: dict, prefix: str = "") -> list[str]:
    out = []
    for key, value in tree.items():
        name = f"{prefix}.{key}" if prefix else key
        out.extend(_leaves(value, name) if isinstance(value, dict) and value else [name])
    return out


def test_defaults_match_the_schema():
    schema = yaml.safe_load(settings.SCHEMA_FILE.read_text())
    jsonschema.validate(settings.defaults, schema)
    # the schema is strict: a key missing from it is an error
    bad = {"federation": {**settings.defaults["federation"], "no-such-key": 1}}
    try:
        jsonschema.validate(bad, schema)
    except jsonschema.ValidationError as e:
        assert "no-such-key" in str(e)
    else:
        raise AssertionError("the schema accepted an unknown key")


def test_defaults_are_in_dask_config():
    for key in _leaves(settings.defaults):
        assert dask.config.get(key, default="<missing>") != "<missing>", key
    with dask.config.set({"federation.site-queue.saturation": 3.5}):
        assert dask.config.get("federation.site-queue.saturation") == 3.5


def test_readme_documents_every_key():
    text = README.read_text()
    missing = [key for key in _leaves(settings.defaults) if f"`{key}`" not in text]
    assert not missing, f"README's settings table lacks {missing}"


def test_readme_table_is_generated_from_the_defaults():
    assert settings.reference_table() in README.read_text(), (
        "README's settings table differs from federation.yaml; paste "
        "`python -m federation.settings`"
    )
