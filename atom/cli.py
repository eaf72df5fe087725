"""The `atom` command line."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import click

from .errors import LoadError

DEFAULT_DIR = "processes"


def _load(directory: str) -> Any:
    from .loader import load_directory

    try:
        return load_directory(directory)
    except LoadError as exc:
        for p in exc.problems:
            click.echo(str(p), err=True)
        click.echo(f"{len(exc.problems)} error(s)", err=True)
        sys.exit(1)


@click.group()
@click.version_option(package_name="atom-engine")
def main() -> None:
    """Atom: an integration process engine. Processes are YAML graphs of shapes."""


@main.command()
@click.argument("directory", default=DEFAULT_DIR, type=click.Path(file_okay=False))
def validate(directory: str) -> None:
    """Check every component under DIRECTORY; print all problems; exit 1 on any error."""
    dep = _load(directory)
    click.echo(f"ok: {len(dep.processes)} process(es), {len(dep.connections)} connection(s), "
               f"{len(dep.maps)} map(s)")


def _parse_props(props: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for p in props:
        if "=" not in p:
            raise click.BadParameter(f"expected K=V, got '{p}'", param_hint="--prop")
        k, v = p.split("=", 1)
        out[k] = v
    return out


@main.command()
@click.argument("target")
@click.option("--input", "input_", type=click.Path(exists=True, dir_okay=False, allow_dash=True),
              help="input document file, or - for stdin")
@click.option("--prop", multiple=True, help="process property K=V (repeatable)")
@click.option("--dir", "directory", default=None, help="component directory (default: the file's, or processes/)")
@click.option("--json-record", is_flag=True, help="print the execution record as JSON on stderr")
def run(target: str, input_: str | None, prop: tuple[str, ...], directory: str | None, json_record: bool) -> None:
    """Run one execution of a process (a file or a process name) in-process and print what it returns.

    Exits 1 when the execution ends in ERROR.
    """
    from .document import Document
    from .engine import Engine

    path = Path(target)
    name = target
    if path.suffix in (".yaml", ".yml") and path.exists():
        directory = directory or str(path.parent)
        from .yamlio import load_yaml

        data, _ = load_yaml(path.read_text(encoding="utf-8"), str(path))
        if not isinstance(data, dict) or "process" not in data:
            raise click.ClickException(f"{target}: not a process component")
        name = str(data["process"])
    dep = _load(directory or DEFAULT_DIR)
    if name not in dep.processes:
        raise click.ClickException(f"no process named '{name}' in {directory or DEFAULT_DIR}")
    docs = None
    if input_ == "-":
        with click.open_file("-", "rb") as stdin:
            docs = [Document(stdin.read())]
    elif input_ is not None:
        docs = [Document.from_file(input_)]  # read when needed: a streaming split reads it piece by piece
    props = _parse_props(prop)

    async def go() -> Any:
        engine = Engine(dep)
        try:
            return await engine.execute(name, docs, properties=props, execution_type="exec_manual")
        finally:
            await engine.stop()

    ex = asyncio.run(go())
    out = sys.stdout.buffer
    for i, d in enumerate(ex.returned):
        if i:
            out.write(b"\n")
        out.write(d.data)
    if ex.returned:
        out.write(b"\n")
    out.flush()
    if json_record:
        click.echo(json.dumps(ex.record(), indent=2), err=True)
    click.echo(f"{ex.status}{': ' + ex.message if ex.message else ''} ({ex.id}, {ex.duration_ms} ms)", err=True)
    if ex.status == "ERROR":
        sys.exit(1)


@main.command()
@click.option("--output", "-o", type=click.Path(dir_okay=False), help="write to a file instead of stdout")
def schema(output: str | None) -> None:
    """Print the JSON Schema of component files (generated from the shape and connector specs)."""
    from .components import json_schema

    text = json.dumps(json_schema(), indent=2, sort_keys=False) + "\n"
    if output:
        Path(output).write_text(text, encoding="utf-8")
    else:
        click.echo(text, nl=False)


@main.command()
@click.argument("name", required=False)
def connectors(name: str | None) -> None:
    """List installed connector types and their fields (or one type's fields in detail)."""
    from .connector import default_registry
    from .resilience import NETWORK_FIELDS  # noqa: F401  (documented on each network connector)

    reg = default_registry()
    names = [name] if name else reg.names()
    for n in names:
        cls = reg.get(n)
        if cls is None:
            raise click.ClickException(f"unknown connector type '{n}'")
        click.echo(f"{n}: {cls.summary}")
        click.echo("  connection:")
        for row in cls.connection_spec.describe():
            click.echo("    " + _field_line(row))
        for action, spec in sorted(cls.operations.items()):
            click.echo(f"  operation ({action}):")
            for row in spec.describe():
                click.echo("    " + _field_line(row))
    for n, err in sorted(reg.errors.items()):
        click.echo(f"{n}: failed to load: {err}", err=True)


def _field_line(row: dict[str, Any]) -> str:
    bits = [f"{row['name']} ({row['type']}"]
    if row["required"]:
        bits.append(", required")
    if row["default"] not in (None, "", [], {}):
        bits.append(f", default {row['default']}")
    if row["secret"]:
        bits.append(", secret")
    bits.append(")")
    return "".join(bits) + (f": {row['description']}" if row["description"] else "")


@main.command("test")
@click.argument("directory", default=DEFAULT_DIR, type=click.Path(file_okay=False))
@click.option("-k", "pattern", default=None, help="only tests whose name contains this")
def test_cmd(directory: str, pattern: str | None) -> None:
    """Run the `*_test.yaml` process tests under DIRECTORY."""
    from .testing import run_directory

    results = run_directory(directory, pattern=pattern)
    failed = 0
    for r in results:
        mark = "PASS" if r.ok else "FAIL"
        click.echo(f"{mark} {r.file}::{r.name}")
        if not r.ok:
            failed += 1
            for line in r.failures:
                click.echo("    " + line.replace("\n", "\n    "))
    click.echo(f"{len(results) - failed} passed, {failed} failed")
    if failed or not results:
        sys.exit(1)


def _register_runtime_commands() -> None:
    try:
        from .cli_runtime import register
    except ImportError:
        return
    register(main)


_register_runtime_commands()
