"""Load and validate a component directory into an immutable Deployment.

Everything is checked before anything runs, and every problem is reported at once as
`file:line:col: error: message`.
"""

from __future__ import annotations

import hashlib
import os
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from .components import CONNECTION_BASE, PROCESS_SPEC, SHAPE_COMMON
from .connector import ConnectorRegistry, default_registry
from .errors import LoadError, Location, Problem
from .model import ConnectionDef, Deployment, MapDef, ProcessDef, StartDef
from .shapes import END, SHAPES, Shape
from .spec import MISSING, CheckContext, Field, Spec, Str, did_you_mean
from .yamlio import Where, load_yaml

KINDS = ("process", "connection", "map", "api")
CONFIG_NAMES = {"atom.yaml", "atom.yml"}


@dataclass
class _Parsed:
    file: str
    kind: str
    name: str
    node: Any
    digest: str


class CompileContext:
    """What a shape may consult while compiling: maps, connections, other processes."""

    def __init__(self, ctx: CheckContext, maps: Mapping[str, MapDef], connections: Mapping[str, ConnectionDef],
                 process_names: set[str], process_name: str, file: str, registry: ConnectorRegistry) -> None:
        self.ctx = ctx
        self.maps = maps
        self.connections = connections
        self.process_names = process_names
        self.process_name = process_name
        self.file = file
        self.registry = registry

    def error(self, loc: Location, message: str) -> None:
        self.ctx.error(loc, message)

    def resolve_map(self, cfg: Any, where: Where, name: str) -> Any:
        if isinstance(cfg, str):
            m = self.maps.get(cfg)
            if m is None:
                self.error(where.location, f"unknown map '{cfg}'{did_you_mean(cfg, self.maps)}")
                return None
            return m.compiled
        if cfg is None:
            return None
        from .maps import MAP_SPEC, compile_map

        values = MAP_SPEC.check(cfg, where, self.ctx)
        return compile_map(values, where, self.ctx, name)

    def check_operation(self, connection: str, action: str, op: Any, where: Where, what: str) -> dict[str, Any]:
        cdef = self.connections.get(connection)
        if cdef is None:
            self.error(where.value("connection") if "connection" in (where.node or {}) else where.location,
                       f"unknown connection '{connection}'{did_you_mean(connection, self.connections)}")
            return {}
        cls = cdef.connector_class
        spec = cls.operations.get(action)
        if spec is None:
            self.error(where.value("action") if "action" in (where.node or {}) else where.location,
                       f"connector type '{cdef.type}' does not support action '{action}' "
                       f"(supported: {', '.join(sorted(cls.operations)) or 'none'})")
            return {}
        owhere = where.child("operation") if where.node is not None and "operation" in where.node else where
        values = spec.check(op or {}, owhere, self.ctx)
        return cls.check_operation(action, values, owhere, self.ctx)

    def require_process(self, name: str, loc: Location) -> None:
        if name not in self.process_names:
            self.error(loc, f"unknown process '{name}'{did_you_mean(name, self.process_names)}")


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def component_files(directory: str | os.PathLike[str]) -> list[Path]:
    """Component files under a directory: *.yaml / *.yml, not tests, not atom.yaml, no hidden dirs."""
    root = Path(directory)
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]  # hidden directories are not walked
        for name in filenames:
            stem, ext = os.path.splitext(name)
            if ext not in (".yaml", ".yml") or name.startswith(".") or name in CONFIG_NAMES or stem.endswith("_test"):
                continue
            p = Path(dirpath, name)
            if p.is_file():
                out.append(p)
    out.sort()
    return out


def load_directory(directory: str | os.PathLike[str], *, registry: ConnectorRegistry | None = None,
                   env: Mapping[str, str] | None = None, previous: Deployment | None = None) -> Deployment:
    """Load every component under `directory`. Raises LoadError holding every problem."""
    root = Path(directory)
    if not root.is_dir():
        raise LoadError([Problem(Location(str(directory)), "component directory does not exist")])
    files = component_files(root)
    cwd = os.getcwd()
    sources = []
    for p in files:
        try:
            sources.append((_display(p, cwd), p.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError) as exc:
            raise LoadError([Problem(Location(_display(p, cwd)), f"cannot read: {exc}")]) from None
    return load_sources(sources, directory=str(root), registry=registry, env=env, previous=previous)


def _display(p: Path, cwd: str | None = None) -> str:
    try:
        return os.path.relpath(p, cwd)
    except ValueError:
        return str(p)


def load_sources(sources: list[tuple[str, str]], *, directory: str = "", registry: ConnectorRegistry | None = None,
                 env: Mapping[str, str] | None = None, previous: Deployment | None = None) -> Deployment:
    """Load components from (file name, YAML text) pairs."""
    registry = registry or default_registry()
    ctx = CheckContext(env=env)
    parsed: list[_Parsed] = []
    seen: dict[tuple[str, str], str] = {}
    for file, text in sources:
        data, problems = load_yaml(text, file)
        ctx.problems.extend(problems)
        if problems:
            continue
        if data is None:
            continue  # an empty file is not a component
        where = Where(file, data)
        if not isinstance(data, Mapping):
            ctx.error(where.location, "a component file must be a mapping with one of: " + ", ".join(KINDS))
            continue
        kinds = [k for k in data if k in KINDS]
        if len(kinds) != 1:
            if not kinds:
                first = next(iter(data), "")
                ctx.error(where.key(first) if first else where.location,
                          f"unknown component kind '{first}'{did_you_mean(str(first), KINDS)}; the first key "
                          f"must be one of: {', '.join(KINDS)}")
            else:
                ctx.error(where.key(kinds[1]), f"a file holds one component; found {', '.join(kinds)}")
            continue
        kind = kinds[0]
        name = data[kind]
        if not isinstance(name, str) or not name:
            ctx.error(where.value(kind), f"{kind} name must be a non-empty string")
            continue
        if (kind, name) in seen:
            ctx.error(where.value(kind), f"duplicate {kind} name '{name}' (also in {seen[(kind, name)]})")
            continue
        seen[(kind, name)] = file
        if kind == "api":
            ctx.error(where.key(kind), "api components are not supported yet; expose processes with listeners")
            continue
        parsed.append(_Parsed(file, kind, name, data, _digest(text)))

    prev = previous or Deployment.empty(directory)

    def version(kind_map: Mapping[str, Any], name: str, digest: str) -> int:
        old = kind_map.get(name)
        if old is None:
            return 1
        return old.version if old.digest == digest else old.version + 1

    # connections
    connections: dict[str, ConnectionDef] = {}
    for p in (x for x in parsed if x.kind == "connection"):
        where = Where(p.file, p.node)
        tname = p.node.get("type")
        cls = registry.get(str(tname)) if tname is not None else None
        if cls is None:
            if tname is None:
                ctx.error(where.location, "missing required field 'type'")
            else:
                why = f" ({registry.errors[str(tname)]})" if str(tname) in registry.errors else ""
                ctx.error(where.value("type"), f"unknown connector type '{tname}'"
                          f"{did_you_mean(str(tname), registry.names())}{why}")
            continue
        spec = Spec([*CONNECTION_BASE, *cls.connection_spec.fields])
        secrets_before = len(ctx.secrets)
        values = spec.check(p.node, where, ctx)
        values = cls.check_connection(values, where, ctx)
        secrets = tuple(ctx.secrets[secrets_before:])
        config = {k: v for k, v in values.items() if k not in ("connection", "type")}
        connections[p.name] = ConnectionDef(p.name, str(tname), p.file, MappingProxyType(config), cls, secrets,
                                            version(prev.connections, p.name, p.digest), p.digest)

    # maps
    maps: dict[str, MapDef] = {}
    map_parsed = [x for x in parsed if x.kind == "map"]
    if map_parsed:
        from .maps import MAP_SPEC, compile_map

        mspec = Spec([Field("map", Str(), required=True), *MAP_SPEC.fields], open=MAP_SPEC.open)
        for p in map_parsed:
            where = Where(p.file, p.node)
            values = mspec.check(p.node, where, ctx)
            values.pop("map", None)
            compiled = compile_map(values, where, ctx, p.name)
            if compiled is not None:
                maps[p.name] = MapDef(p.name, p.file, compiled, version(prev.maps, p.name, p.digest), p.digest)

    # processes
    names = {x.name for x in parsed if x.kind == "process"}
    processes: dict[str, ProcessDef] = {}
    for p in (x for x in parsed if x.kind == "process"):
        cc = CompileContext(ctx, maps, connections, names, p.name, p.file, registry)
        got = _compile_process(p, cc, version(prev.processes, p.name, p.digest))
        if got is not None:
            processes[p.name] = got

    _check_listener_clashes(processes, ctx)
    if ctx.problems:
        raise LoadError(ctx.problems)
    return Deployment(directory, MappingProxyType(processes), MappingProxyType(connections),
                      MappingProxyType(maps), prev.generation + 1, tuple(ctx.secrets))


def _compile_start(node: Any, where: Where, values: Mapping[str, Any], cc: CompileContext) -> StartDef:
    start = values.get("start") or {"none": {}}
    kind = next((k for k in ("listen", "schedule", "none", "connector", "passthrough") if k in start), "none")
    cfg = dict(start.get(kind) or {})
    swhere = where.child("start").child(kind) if "start" in node else where
    schedule = None
    if kind == "listen":
        if "rest" not in cfg and "soap" not in cfg and "object" not in cfg:
            cc.error(swhere.location, "a listener needs 'object' (for /ws/simple), 'rest' or 'soap'")
    if kind == "schedule":
        schedule = cfg
        _check_schedule(cfg, swhere, cc)
    if kind == "connector":
        cfg["operation"] = cc.check_operation(cfg.get("connection", ""), "get", cfg.get("operation") or {},
                                              swhere, "start")
        if cfg.get("schedule"):
            schedule = cfg["schedule"]
            _check_schedule(schedule, swhere.child("schedule"), cc)
    return StartDef(kind, MappingProxyType(cfg), MappingProxyType(schedule) if schedule else None)


def _check_schedule(cfg: Mapping[str, Any], where: Where, cc: CompileContext) -> None:
    tz = cfg.get("timezone", "UTC")
    try:
        zoneinfo.ZoneInfo(tz)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        cc.error(where.value("timezone"), f"unknown time zone '{tz}'")
        return
    if "cron" in cfg:
        from apscheduler.triggers.cron import CronTrigger

        try:
            CronTrigger.from_crontab(cfg["cron"], timezone=tz)
        except ValueError as exc:
            cc.error(where.value("cron"), f"invalid cron expression '{cfg['cron']}': {exc}")
    if "every" in cfg and cfg["every"] <= 0:
        cc.error(where.value("every"), "every must be greater than 0")


_COMMON = {f.name: f for f in SHAPE_COMMON}
_COMMON_SPEC = Spec(list(_COMMON.values()), open=True)


def _compile_process(p: _Parsed, cc: CompileContext, ver: int) -> ProcessDef | None:
    ctx = cc.ctx
    where = Where(p.file, p.node)
    values = PROCESS_SPEC.check(p.node, where, ctx)
    start = _compile_start(p.node, where, values, cc)
    before = len(ctx.problems)
    shapes_node = p.node.get("shapes")
    swhere = where.child("shapes")
    if not isinstance(shapes_node, list) or not shapes_node:
        if "shapes" in p.node:
            ctx.error(where.value("shapes"), "shapes must be a non-empty list")
        return None
    compiled: dict[str, Shape] = {}
    order: list[str] = []
    item_where: dict[str, Where] = {}
    explicit_next: dict[str, str] = {}
    common = _COMMON
    for i, item in enumerate(shapes_node):
        iw = swhere.child(i)
        if not isinstance(item, Mapping):
            ctx.error(iw.location, "a shape must be a mapping like {id: x, <shape type>: {...}}")
            continue
        kinds = [k for k in item if k not in common]
        known = [k for k in kinds if k in SHAPES]
        for k in kinds:
            if k not in SHAPES:
                ctx.error(iw.key(k), f"unknown shape type or field '{k}'"
                          f"{did_you_mean(str(k), [*SHAPES, *common])}")
        if len(known) != 1:
            if not known and not [k for k in kinds if k not in SHAPES]:
                ctx.error(iw.location, f"shape has no type; expected one of: {', '.join(sorted(SHAPES))}")
            elif len(known) > 1:
                ctx.error(iw.key(known[1]), f"a shape has one type; found {', '.join(known)}")
            continue
        kind = known[0]
        base = _COMMON_SPEC.check({k: v for k, v in item.items() if k in common}, iw, ctx)
        sid = base.get("id") or f"{kind}{i + 1}"
        if sid in compiled or sid == END:
            ctx.error(iw.value("id"), f"duplicate shape id '{sid}'" if sid != END else "'end' is reserved")
            continue
        cls = SHAPES[kind]
        value = cls.value_type.check(item[kind], iw.child(kind), iw.value(kind), ctx)
        if value is MISSING:
            value = {}
        try:
            sh = cls(sid, value, iw.child(kind), cc)
        except Exception as exc:  # a shape constructor must not take loading down
            ctx.error(iw.key(kind), f"cannot compile {kind} shape: {type(exc).__name__}: {exc}")
            continue
        compiled[sid] = sh
        order.append(sid)
        item_where[sid] = iw
        if "next" in base:
            explicit_next[sid] = base["next"]
    # link implicit next
    for idx, sid in enumerate(order):
        sh = compiled[sid]
        if sid in explicit_next:
            if sh.branching or sh.terminal:
                ctx.error(item_where[sid].key("next"), f"a {sh.kind} shape cannot have 'next'")
            sh.next = explicit_next[sid]
        elif not sh.branching and not sh.terminal:
            sh.next = order[idx + 1] if idx + 1 < len(order) else None
    # dangling targets
    for sid in order:
        for fieldname, target in compiled[sid].targets():
            if target != END and target not in compiled:
                loc = item_where[sid].key("next") if fieldname == "next" else item_where[sid].location
                ctx.error(loc, f"shape '{sid}': {fieldname} refers to unknown shape '{target}'"
                          f"{did_you_mean(target, compiled)}")
    if len(ctx.problems) > before:
        return None
    # reachability and cycles
    first = order[0]
    reach = _check_graph(first, compiled, item_where, ctx)
    for sid in order:
        if sid not in reach:
            ctx.error(item_where[sid].location, f"shape '{sid}' is unreachable from the first shape '{first}'")
    if len(ctx.problems) > before:
        return None
    return ProcessDef(
        name=p.name, file=p.file, description=values.get("description", ""), mode=values.get("mode", "general"),
        allow_simultaneous=values.get("allow_simultaneous", True), start=start,
        shapes=MappingProxyType(compiled), first=first,
        properties=MappingProxyType(dict(values.get("properties", {}))), version=ver, digest=p.digest,
    )


def _check_graph(first: str, compiled: Mapping[str, Shape], item_where: Mapping[str, Where],
                 ctx: CheckContext) -> set[str]:
    """Report every cycle met walking the shapes depth-first from `first`; return the shapes reached.
    Iterative, so a process of thousands of shapes in a row does not exhaust the stack."""
    reach = {first}
    state = {first: 1}  # 1: on the current path, 2: done
    path = [first]
    stack = [iter(compiled[first].targets())]
    while stack:
        for _, t in stack[-1]:
            if t == END:
                continue
            seen = state.get(t)
            if seen == 1:
                cyc = " -> ".join([*path[path.index(t):], t])
                ctx.error(item_where[t].location, f"shapes form a cycle: {cyc}")
            elif seen is None:
                state[t] = 1
                reach.add(t)
                path.append(t)
                stack.append(iter(compiled[t].targets()))
                break
        else:
            state[path.pop()] = 2
            stack.pop()
    return reach


def listener_key(pdef: ProcessDef) -> tuple[str, str] | None:
    """(kind, route) of a listener process: ('simple', 'createOrder'), ('rest', 'POST /orders/{id}'),
    ('soap', 'notifications')."""
    cfg = pdef.listen
    if cfg is None:
        return None
    if cfg.get("soap"):
        return ("soap", cfg["soap"]["operation"])
    if cfg.get("rest"):
        return ("rest", f"{cfg['rest'].get('method', 'POST')} {cfg['rest']['path']}")
    obj = cfg.get("object", "")
    return ("simple", f"{cfg.get('operation', 'execute')}{obj[:1].upper()}{obj[1:]}")


def _check_listener_clashes(processes: Mapping[str, ProcessDef], ctx: CheckContext) -> None:
    seen: dict[tuple[str, str], str] = {}
    for name, pdef in sorted(processes.items()):
        key = listener_key(pdef)
        if key is None:
            continue
        if key in seen:
            ctx.error(Location(pdef.file), f"listener {key[0]} '{key[1]}' is already served by process '{seen[key]}'")
        else:
            seen[key] = name
