"""Shapes: the steps of a process graph.

Each shape type declares, in one place, its name, the spec of its value (used for validation,
`atom schema` and the docs) and its behaviour. A shape object is compiled once at load time
(templates, paths, references resolved) and is immutable; `run()` works on a batch of documents.

Contract of `run(docs, ex)`: it returns a list of `(target_shape_id | None, documents)` pairs that
the engine follows in order (depth-first, like Boomi). Documents returned with `error` set have
failed: the engine routes them to the enclosing try/catch or records them as execution errors.
Shapes that run paths themselves (branch, try_catch, flow_control) call `ex.run_path()` and
return an empty list. Raising DocumentError fails every document of the batch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, ClassVar

from ..document import Document
from ..errors import DocumentError
from ..spec import Object, Spec, Type
from ..yamlio import Where

if TYPE_CHECKING:
    from ..engine import Execution
    from ..loader import CompileContext

END = "end"
Outputs = list[tuple[str | None, list[Document]]]


class Shape:
    kind: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    example: ClassVar[str] = ""
    #: the type of the shape's value in YAML (usually an Object(Spec))
    value_type: ClassVar[Type] = Object(Spec([]))
    #: names the targets itself (decision, branch, route, try_catch): no implicit `next`
    branching: ClassVar[bool] = False
    #: ends its path (return, stop, exception): no implicit `next`
    terminal: ClassVar[bool] = False

    def __init__(self, id: str, cfg: Any, where: Where, cc: CompileContext) -> None:
        self.id = id
        self.cfg = cfg
        self.next: str | None = None

    def targets(self) -> list[tuple[str, str]]:
        """Shape ids this shape routes to, as (field name, id) for error messages."""
        return [("next", self.next)] if self.next else []

    async def run(self, docs: list[Document], ex: Execution) -> Outputs:
        return [(self.next, docs)]

    def __repr__(self) -> str:
        return f"<{self.kind} {self.id}>"


SHAPES: dict[str, type[Shape]] = {}


def shape(cls: type[Shape]) -> type[Shape]:
    """Register a shape type under its `kind`."""
    SHAPES[cls.kind] = cls
    return cls


def each(docs: Iterable[Document], fn: Callable[[Document], Document | list[Document] | None],
         where: str) -> list[Document]:
    """Apply fn per document; a DocumentError fails that document only (others go on)."""
    out: list[Document] = []
    for doc in docs:
        try:
            got = fn(doc)
        except DocumentError as exc:
            out.append(doc.fail(f"{where}: {exc}", exc.kind))
            continue
        if got is None:
            continue
        if isinstance(got, list):
            out.extend(got)
        else:
            out.append(got)
    return out


def _load_all() -> None:
    from . import calls, documents, flow, properties  # noqa: F401


_load_all()
