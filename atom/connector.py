"""The connector interface and its registry.

A connector type is a class registered under the entry point group `atom.connectors`; built-ins in
the top-level `connectors/` package register exactly like third-party ones. One instance exists per
connection component and is shared by all executions (pooled clients).

Contract:
- the constructor validates nothing and opens nothing (the loader already checked the config against
  `connection_spec`); resources open in `start()` and close in `stop()`;
- `operations` maps each supported action (`get`, `send`, `listen`) to the spec of its operation
  fields; template fields arrive compiled (`atom.expressions.Template`), render them per document with
  `ctx.scope(doc)`;
- `send(op, docs, ctx)` and `get(op, docs, ctx)` return the outgoing documents. A document that fails
  is returned with its `error` set (`doc.fail(message)`), never dropped silently; raising fails the
  whole batch (every input document gets the message).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING, Any, ClassVar

from .document import Document
from .resilience import CircuitBreaker, RetryPolicy
from .spec import CheckContext, Spec
from .yamlio import Where

if TYPE_CHECKING:
    from .engine import Execution

log = logging.getLogger("atom.connector")


class OperationContext:
    """A connector's door to the running execution: template scope, logging, the shape id."""

    __slots__ = ("execution", "shape_id")

    def __init__(self, execution: Execution | None, shape_id: str = "") -> None:
        self.execution = execution
        self.shape_id = shape_id

    def scope(self, doc: Document | None = None) -> dict[str, Any]:
        if self.execution is None:
            from .expressions import ENV_VIEW

            return {"doc": doc, "process": {}, "execution": {}, "env": ENV_VIEW}
        return self.execution.scope(doc)

    def log(self, level: str, message: str) -> None:
        if self.execution is not None:
            self.execution.log(level, message, self.shape_id)
        else:
            log.log(logging.getLevelName(level.upper()), message)


class Connector:
    """Base class of connector types (one instance per connection)."""

    type: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    #: fields of the connection component (beside `connection` and `type`)
    connection_spec: ClassVar[Spec] = Spec([])
    #: action -> spec of the operation mapping of a connector shape / start
    operations: ClassVar[dict[str, Spec]] = {}

    def __init__(self, name: str, config: Mapping[str, Any]) -> None:
        self.name = name
        self.config = config
        self.retry = RetryPolicy.from_config(config.get("retry"))
        self.breaker = CircuitBreaker.from_config(name, config.get("circuit_breaker"))
        self.timeout: float = config.get("timeout", 30.0)
        self.started = False

    @classmethod
    def check_operation(cls, action: str, op: dict[str, Any], where: Where, ctx: CheckContext) -> dict[str, Any]:
        """Extra load-time checks of an operation after its spec passed; report with ctx.error."""
        return op

    @classmethod
    def check_connection(cls, config: dict[str, Any], where: Where, ctx: CheckContext) -> dict[str, Any]:
        """Extra load-time checks of a connection after its spec passed."""
        return config

    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        self.started = False

    async def get(self, op: Mapping[str, Any], docs: list[Document], ctx: OperationContext) -> list[Document]:
        raise NotImplementedError(f"connector '{self.type}' does not support get")

    async def send(self, op: Mapping[str, Any], docs: list[Document], ctx: OperationContext) -> list[Document]:
        raise NotImplementedError(f"connector '{self.type}' does not support send")

    def describe(self) -> dict[str, Any]:
        """Safe, secret-free summary for APIs and logs."""
        return {"name": self.name, "type": self.type}


class ConnectorRegistry:
    """Connector types by name. `discover()` reads the `atom.connectors` entry points; tests may build
    a registry holding just the types they need.

    A discovered type is imported on its first use (`get`), so loading components that use two
    connector types does not import the packages of all the others; `types`, `errors` and `names()`
    import every one (for `atom connectors`, the JSON Schema and the docs)."""

    def __init__(self, types: Mapping[str, type[Connector]] | None = None,
                 errors: Mapping[str, str] | None = None) -> None:
        self._types: dict[str, type[Connector]] = dict(types or {})
        self._errors: dict[str, str] = dict(errors or {})
        self._pending: dict[str, EntryPoint] = {}
        self._lock = threading.RLock()  # a type being imported is in neither dict: let others wait for it

    @classmethod
    def discover(cls) -> ConnectorRegistry:
        """The connector types of the `atom.connectors` entry points (imported when first used)."""
        return cls.from_entry_points(entry_points(group="atom.connectors"))

    @classmethod
    def from_entry_points(cls, eps: Iterable[EntryPoint]) -> ConnectorRegistry:
        """A registry of entry points, each imported when its type is first used (the last one of a name wins)."""
        reg = cls()
        for ep in eps:
            reg._pending[ep.name] = ep
        return reg

    def _load(self, name: str) -> None:
        with self._lock:
            ep = self._pending.get(name)
            if ep is None:
                return
            try:
                obj = ep.load()
            except Exception as exc:  # a broken plugin must not take the runtime down
                self._errors[name] = f"{type(exc).__name__}: {exc}"
            else:
                if isinstance(obj, type) and issubclass(obj, Connector):
                    self._types[name] = obj
                else:
                    self._errors[name] = "entry point is not a Connector subclass"
            del self._pending[name]

    def load_all(self) -> None:
        """Import every discovered connector type now."""
        with self._lock:
            for name in list(self._pending):
                self._load(name)

    @property
    def types(self) -> dict[str, type[Connector]]:
        """Every connector type that loads, by name."""
        self.load_all()
        return self._types

    @property
    def errors(self) -> dict[str, str]:
        """Why each connector type that failed to load did."""
        self.load_all()
        return self._errors

    def register(self, name: str, cls_: type[Connector]) -> None:
        self._pending.pop(name, None)
        self._errors.pop(name, None)
        self._types[name] = cls_

    def get(self, name: str) -> type[Connector] | None:
        got = self._types.get(name)
        if got is None and name in self._pending:
            self._load(name)  # waits while another thread imports it
            got = self._types.get(name)
        return got

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def names(self) -> list[str]:
        return sorted(self.types)


_DEFAULT: ConnectorRegistry | None = None


def default_registry() -> ConnectorRegistry:
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = ConnectorRegistry.discover()
    return _DEFAULT


ConnectorFactory = Callable[[str, Mapping[str, Any]], Connector]
