"""JSON output trees compiled to one generated Python function at load time.

The compiled nodes (`Leaf`, `Obj`, `Repeat`) each have an emitter closure; a map writing JSON
would call one closure per field, per item. For the common nodes this module writes the whole
walk as the source of one function instead, the way the map would be written by hand:

    def fill(out, c, run):
        try:
            v = c['orderId']
        except (KeyError, IndexError, TypeError):
            v = None
        if v is not None:
            out['id'] = v
        ...

Simple JSON paths (`$.a.b`) are inlined as subscripts; other values call their compiled compute
function; a repeating group is a loop. Nodes with a condition (`when`), a context, `keep_null` or
scalar items keep their own emitter, called from the generated code, so the generated function
does exactly what the emitters do, error messages included. The source is built only from fixed
pieces and generated names: keys, paths and functions are passed in as variables, never as text.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..errors import DocumentError
from ._rules import Leaf, Node, Obj, Repeat, Run

Fill = Callable[[dict[str, Any], Any, Run], None]

#: groups nested deeper than this call their emitter (Python limits statically nested blocks)
_MAX_DEPTH = 6


class _Gen:
    def __init__(self) -> None:
        self.env: dict[str, Any] = {"DocumentError": DocumentError}
        self.lines: list[str] = []
        self.n = 0
        self.uses_stack = False
        self.uses_scope = False

    def name(self, prefix: str, value: Any) -> str:
        self.n += 1
        var = f"{prefix}{self.n}"
        self.env[var] = value
        return var

    def fresh(self, prefix: str) -> str:
        self.n += 1
        return f"{prefix}{self.n}"

    def emit(self, indent: int, line: str) -> None:
        self.lines.append("    " * indent + line)

    def children(self, nodes: list[Node], out: str, c: str, indent: int, depth: int) -> None:
        for node in nodes:
            if type(node) is Leaf:
                self.leaf(node, out, c, indent)
            elif type(node) is Obj and node.when is None and node.context is None and depth < _MAX_DEPTH:
                self.obj(node, out, c, indent, depth)
            elif (type(node) is Repeat and node.when is None and node.scalar is None
                  and depth < _MAX_DEPTH):
                self.repeat(node, out, c, indent, depth)
            else:
                em = self.name("E", node.json_emitter())  # type: ignore[attr-defined]
                self.emit(indent, f"{em}({out}, {c}, run)")

    def leaf(self, leaf: Leaf, out: str, c: str, indent: int) -> None:
        if leaf.when is not None or leaf.keep_null:
            em = self.name("E", leaf.json_emitter())
            self.emit(indent, f"{em}({out}, {c}, run)")
            return
        key = self.name("K", leaf.key)
        keys = getattr(leaf.compute, "walk_keys", None)
        if keys is not None and len(keys) <= 4:
            if not keys:
                self.emit(indent, f"v = {c}")
            else:
                sub = "".join(f"[{self.name('P', k)}]" for k in keys)
                self.emit(indent, "try:")
                self.emit(indent + 1, f"v = {c}{sub}")
                self.emit(indent, "except (KeyError, IndexError, TypeError):")
                self.emit(indent + 1, "v = None")
        else:
            comp = self.name("C", leaf.compute)
            err = self.name("X", leaf.error)
            self.emit(indent, "try:")
            self.emit(indent + 1, f"v = {comp}({c}, run)")
            self.emit(indent, "except DocumentError as exc:")
            self.emit(indent + 1, f"raise {err}(exc, run) from None")
        self.emit(indent, "if v is not None:")
        self.emit(indent + 1, f"{out}[{key}] = v")

    def obj(self, node: Obj, out: str, c: str, indent: int, depth: int) -> None:
        d = self.fresh("d")
        key = self.name("K", node.key)
        self.emit(indent, f"{d} = {{}}")
        self.children(node.children, d, c, indent, depth + 1)
        self.emit(indent, f"if {d}:")
        self.emit(indent + 1, f"prev = {out}.get({key})")
        self.emit(indent + 1, "if type(prev) is dict:")
        self.emit(indent + 2, f"prev.update({d})")
        self.emit(indent + 1, "else:")
        self.emit(indent + 2, f"{out}[{key}] = {d}")

    def repeat(self, node: Repeat, out: str, c: str, indent: int, depth: int) -> None:
        self.uses_stack = True
        items = self.name("I", node.items)
        err = self.name("X", node.error)
        key = self.name("K", node.key)
        its, lst, i, it, d, saved = (self.fresh(p) for p in ("its", "lst", "i", "it", "d", "saved"))
        self.emit(indent, "try:")
        self.emit(indent + 1, f"{its} = {items}({c}, run)")
        self.emit(indent, "except DocumentError as exc:")
        self.emit(indent + 1, f"raise {err}(exc, run) from None")
        self.emit(indent, f"{lst} = []")
        self.emit(indent, "stack.append(0)")
        if node.scoped:
            self.uses_scope = True
            self.emit(indent, f"{saved} = (scope.get('item'), scope.get('index'))")
        self.emit(indent, f"for {i}, {it} in enumerate({its}):")
        self.emit(indent + 1, f"stack[-1] = {i}")
        if node.scoped:
            self.emit(indent + 1, f"scope['item'] = {it}")
            self.emit(indent + 1, f"scope['index'] = {i}")
        self.emit(indent + 1, f"{d} = {{}}")
        self.children(node.children, d, it, indent + 1, depth + 1)
        self.emit(indent + 1, f"{lst}.append({d})")
        self.emit(indent, "stack.pop()")
        if node.scoped:
            self.emit(indent, f"scope['item'], scope['index'] = {saved}")
        self.emit(indent, f"{out}[{key}] = {lst}")


def json_filler(nodes: list[Node]) -> Fill:
    """One function writing `nodes` into a dict, as their emitters would, for one input value."""
    g = _Gen()
    g.children(nodes, "out", "c", 1, 0)
    head = ["def fill(out, c, run):"]
    if g.uses_stack:
        head.append("    stack = run.stack")
    if g.uses_scope:
        head.append("    scope = run.scope")
    body = g.lines or ["    pass"]
    src = "\n".join(head + body) + "\n"
    exec(compile(src, "<map>", "exec"), g.env)  # built from fixed pieces and generated names
    fn: Fill = g.env["fill"]
    return fn
