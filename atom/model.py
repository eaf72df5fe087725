"""Loaded components: immutable definitions the engine and runtime work from."""

from __future__ import annotations

import builtins
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .connector import Connector
    from .maps import CompiledMap
    from .shapes import Shape


@dataclass(frozen=True)
class StartDef:
    """How a process starts: kind is listen | schedule | none | connector | passthrough."""

    kind: str
    config: MappingProxyType[str, Any]
    #: a schedule (cron/every/timezone) for schedule starts and scheduled connector starts
    schedule: MappingProxyType[str, Any] | None = None


@dataclass(frozen=True)
class ProcessDef:
    name: str
    file: str
    description: str
    mode: str
    allow_simultaneous: bool
    start: StartDef
    shapes: MappingProxyType[str, Shape]
    first: str
    properties: MappingProxyType[str, str]
    version: int = 1
    digest: str = ""

    @property
    def listen(self) -> MappingProxyType[str, Any] | None:
        return self.start.config if self.start.kind == "listen" else None


@dataclass(frozen=True)
class ConnectionDef:
    name: str
    type: str
    file: str
    config: MappingProxyType[str, Any]
    connector_class: builtins.type[Connector]
    #: secret values, so logs and records can redact them
    secrets: tuple[str, ...] = ()
    version: int = 1
    digest: str = ""

    def build(self) -> Connector:
        return self.connector_class(self.name, self.config)


@dataclass(frozen=True)
class MapDef:
    name: str
    file: str
    compiled: CompiledMap
    version: int = 1
    digest: str = ""


@dataclass(frozen=True)
class Deployment:
    """One consistent, immutable set of components. A redeploy builds a new Deployment."""

    directory: str
    processes: MappingProxyType[str, ProcessDef]
    connections: MappingProxyType[str, ConnectionDef]
    maps: MappingProxyType[str, MapDef]
    generation: int = 1
    secrets: tuple[str, ...] = field(default=())

    def process(self, name: str) -> ProcessDef | None:
        return self.processes.get(name)

    @classmethod
    def empty(cls, directory: str = "") -> Deployment:
        e: MappingProxyType[str, Any] = MappingProxyType({})
        return cls(directory, e, e, e, 0)
