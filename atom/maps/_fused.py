"""Arithmetic chains compiled to straight-line Python at load time.

A value rule such as `{source: $.unitPrice, functions: [{multiply: "{{ item.qty }}"}, {round: 2}]}`
runs, in the general path, one bound function per step, each converting its input to a Decimal,
checking its argument and catching its own errors. When every step of a chain is an arithmetic
function (add, subtract, multiply, divide with a number or a number template, round), the chain is
also compiled into one generated function doing the same Decimal operations inline: the input and
each argument are converted once, and nothing is called per step but the template lookup.

The generated function handles only the values it is sure of (int, float, Decimal and numeric text,
all finite) and gives the same result as the general path, bit for bit: the same Decimal
operations in the same context. Anything else (a missing value, a boolean, text that is not a
number, a division by zero, an overflow) goes to the general path, which gives the value or the
located error it always gave. Templates are free of side effects, so running them again there is
harmless.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import ROUND_HALF_UP, Decimal, getcontext
from typing import TYPE_CHECKING, Any

from ._values import decimal_to_number

if TYPE_CHECKING:
    from ._rules import Run

Compute = Callable[[Any, "Run"], Any]

#: operator of each fusable binary function
_OPS = {"add": "+", "subtract": "-", "multiply": "*", "divide": "/"}


class Step:
    """What a bound arithmetic function does, for the fused chain: `op` is one of `_OPS` or
    "round"; `arg` is a Decimal constant, the quantum of round, or a template's evaluate function
    (`dynamic`), with the template's (name, key) when it is a name path like `item.qty`."""

    __slots__ = ("arg", "dynamic", "name_key", "op")

    def __init__(self, op: str, arg: Any, dynamic: bool = False,
                 name_key: tuple[str, str] | None = None) -> None:
        self.op, self.arg, self.dynamic, self.name_key = op, arg, dynamic, name_key


def step_for(name: str, args: tuple[Any, ...], template: Any = None) -> Step | None:
    """The fusable description of function `name` bound to `args` (or to one number template)."""
    if name in _OPS:
        if template is not None:
            return Step(name, template.evaluate, dynamic=True, name_key=template.name_key())
        n = args[0] if args else None
        return Step(name, n) if type(n) is Decimal and n.is_finite() else None
    if name == "round" and template is None and args and type(args[0]) is int:
        return Step("round", Decimal(1).scaleb(-args[0]))
    return None


#: `{x}` made a finite Decimal (an int kept as it is, or as `int_case` says); anything else: the general path
_NUMBER = """\
        t = type({x})
        if t is float or t is str:
            {x} = Decimal(repr({x}) if t is float else {x}.strip())
            if not {x}.is_finite():
                return generic(c, run)
        elif t is int:
            {int_case}
        elif not (t is Decimal and {x}.is_finite()):
            return generic(c, run)
"""

_INPUT = "        d = v\n" + _NUMBER.format(x="d", int_case="d = Decimal(d)")

_DYN_ARG = """\
        a = A{i}(scope)
"""

#: a name path argument (`{{ item.qty }}`) read in place; anything unusual goes through the template
_DYN_NAME_ARG = """\
        o = scope.get(N{i})
        if type(o) is dict and K{i} in o:
            a = o[K{i}]
        else:
            a = A{i}(scope)
"""

_DYN_CHECK = _NUMBER.format(x="a", int_case="pass") + "        d = d {op} a\n"


def fuse(get: Compute, steps: list[Step], conv: Callable[[Any], Any] | None, final_plain: bool,
         generic: Compute) -> Compute:
    """One function computing `get` then `steps` (then `conv`, or JSON-ready numbers with
    `final_plain`), falling back to `generic` for anything but plain finite numbers."""
    # the thread's context (precision, traps) as the general path uses it, rounding half up
    half_up = getcontext().copy()
    half_up.rounding = ROUND_HALF_UP
    env: dict[str, Any] = {"Decimal": Decimal, "quantize": half_up.quantize, "get": get,
                           "generic": generic, "conv": conv, "number": decimal_to_number}
    body = [_INPUT]
    if any(s.dynamic for s in steps):
        body.append("        scope = run.scope\n")
    for i, s in enumerate(steps):
        env[f"A{i}"] = s.arg
        if s.op == "round":
            body.append(f"        d = quantize(d, A{i})\n")
        elif s.dynamic:
            if s.name_key is not None:
                env[f"N{i}"], env[f"K{i}"] = s.name_key
                body.append(_DYN_NAME_ARG.format(i=i))
            else:
                body.append(_DYN_ARG.format(i=i))
            body.append(_DYN_CHECK.format(op=_OPS[s.op]))
        else:
            body.append(f"        d = d {_OPS[s.op]} A{i}\n")
    if conv is not None:
        result = "conv(d)"
    elif final_plain:
        result = "number(d)"
    else:
        result = "d"
    src = ("def compute(c, run):\n"
           "    v = get(c, run)\n"
           "    try:\n"
           + "".join(body)
           + f"        if not d.is_finite():\n"
             f"            return generic(c, run)\n"
             f"        return {result}\n"
           "    except Exception:\n"
           "        return generic(c, run)\n")
    code = compile(src, "<map arithmetic>", "exec")
    exec(code, env)  # the source is built above from fixed pieces, no user text in it
    fn: Compute = env["compute"]
    fn.generic = generic  # type: ignore[attr-defined]  # the general path, for tests to compare
    return fn
