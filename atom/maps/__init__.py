"""Maps: turn one document into another (JSON, XML, CSV, flat files, X12 EDI), compiled once at load time.

`MAP_SPEC` is the spec of a map body; `compile_map(values, where, ctx, name)` builds a `CompiledMap`
from the values `MAP_SPEC.check()` returns (problems go to `ctx`, located); `CompiledMap.apply(doc, ctx)`
transforms one document. The field syntax is described in docs/maps.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..document import Document
from ..expressions import ENV_VIEW
from ._compile import compile_map
from ._formats import CONTENT_TYPES, FormatOptions
from ._functions import FUNCTIONS
from ._rules import CompiledMap, MapContext
from ._spec import MAP_SPEC

__all__ = ["CONTENT_TYPES", "FUNCTIONS", "MAP_SPEC", "CompiledMap", "FormatOptions", "LocalMapContext",
           "MapContext", "compile_map"]


class LocalMapContext:
    """A MapContext outside an execution (tests, benchmarks, tools): its own process properties."""

    def __init__(self, properties: dict[str, str] | None = None, execution: dict[str, Any] | None = None,
                 data_dir: str | Path | None = None) -> None:
        self.properties: dict[str, str] = properties if properties is not None else {}
        self.execution: dict[str, Any] = execution or {"id": "local", "process": "", "start": "", "type": "local"}
        #: where x12 output keeps its control-number counter (None: in memory, for this context)
        self.data_dir = data_dir

    def scope(self, doc: Document | None = None) -> dict[str, Any]:
        return {"doc": doc, "process": self.properties, "execution": self.execution, "env": ENV_VIEW}
