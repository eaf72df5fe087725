"""Generated references stay in step with the specs: the JSON Schema, and one page per connector type
that documents every connection and operation field."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from atom.components import json_schema
from atom.connector import default_registry

DOCS = Path(__file__).resolve().parents[2] / "docs"
REGISTRY = default_registry()


def test_committed_json_schema_is_current() -> None:
    committed = json.loads((DOCS / "schema.json").read_text(encoding="utf-8"))
    assert committed == json_schema(), "docs/schema.json is stale: run `atom schema -o docs/schema.json`"


@pytest.mark.parametrize("name", REGISTRY.names())
def test_connector_page_documents_every_field(name: str) -> None:
    page = DOCS / "connectors" / f"{name}.md"
    assert page.exists(), f"connector type '{name}' has no page docs/connectors/{name}.md"
    text = page.read_text(encoding="utf-8")
    documented = set(re.findall(r"^\|\s*`([^`]+)`", text, re.M))
    cls = REGISTRY.get(name)
    assert cls is not None
    specs = [("connection", cls.connection_spec), *((f"operation '{a}'", s) for a, s in cls.operations.items())]
    missing = [f"{label}: {row['name']}" for label, spec in specs for row in spec.describe()
               if row["name"] not in documented]
    assert not missing, f"docs/connectors/{name}.md does not document: {', '.join(missing)}"


def test_connector_index_lists_every_type() -> None:
    index = (DOCS / "connectors" / "README.md").read_text(encoding="utf-8")
    listed = set(re.findall(r"^\| `([a-z0-9_]+)` \|", index, re.M))
    assert listed == set(REGISTRY.names())
