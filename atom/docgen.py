"""Reference docs generated from the specs (shapes, connectors), so fields are described once."""

from __future__ import annotations

from typing import Any

from .spec import Object, Spec, Type


def _rows(spec: Spec) -> list[str]:
    out = ["| field | type | default | description |", "|---|---|---|---|"]
    for r in spec.describe():
        default = "required" if r["required"] else ("" if r["default"] in (None, "", [], {}) else f"`{r['default']}`")
        secret = " (secret)" if r["secret"] else ""
        typ = str(r["type"]).replace("|", "\\|")
        desc = str(r["description"]).replace("|", "\\|")
        out.append(f"| `{r['name']}` | {typ} | {default} | {desc}{secret} |")
    return out


def _spec_of(t: Type) -> Spec | None:
    return t.spec if isinstance(t, Object) else None


def shapes_markdown() -> str:
    from .shapes import SHAPES

    lines = [
        "# Shape reference",
        "",
        "Generated from the shape specs by `python -m atom.docgen shapes` — do not edit by hand.",
        "",
        "Every shape item in a process's `shapes:` list has an optional `id` (unique in the process; "
        "defaults to `<type><position>`), an optional `next` (the shape to go on to; default: the next "
        "item of the list, `end` stops the path; not allowed on branching and terminal shapes), an "
        "optional `label`, and exactly one shape-type key below.",
        "",
    ]
    for kind, cls in sorted(SHAPES.items()):
        lines += [f"## `{kind}`", "", cls.summary, ""]
        if cls.example:
            lines += ["```yaml", f"- {cls.example}", "```", ""]
        spec = _spec_of(cls.value_type)
        if spec is not None and spec.fields:
            lines += _rows(spec)
            if spec.one_of:
                lines += ["", f"Exactly one of: {', '.join(f'`{n}`' for n in spec.one_of)}."]
            lines.append("")
        elif spec is None:
            lines += [f"Value: {cls.value_type.label}.", ""]
    return "\n".join(lines).rstrip() + "\n"


def connector_markdown(name: str, cls: Any) -> str:
    lines = [f"### Connection fields (`type: {name}`)", "", *_rows(cls.connection_spec), ""]
    for action, spec in sorted(cls.operations.items()):
        lines += [f"### Operation fields (`action: {action}`)", "", *_rows(spec), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    import sys

    args = argv if argv is not None else sys.argv[1:]
    what = args[0] if args else "shapes"
    if what == "shapes":
        sys.stdout.write(shapes_markdown())
    elif what == "connector" and len(args) > 1:
        from .connector import default_registry

        cls = default_registry().get(args[1])
        if cls is None:
            raise SystemExit(f"unknown connector type '{args[1]}'")
        sys.stdout.write(connector_markdown(args[1], cls))
    else:
        raise SystemExit("usage: python -m atom.docgen shapes | connector NAME")


if __name__ == "__main__":
    main()
