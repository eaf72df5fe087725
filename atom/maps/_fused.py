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
from decimal import ROUND_HALF_UP, Clamped, Decimal, Inexact, Rounded, Subnormal, Underflow, getcontext
from math import floor
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


def _name_arg(i: int, indent: int) -> str:
    """Code reading the name path argument of step `i` (`{{ item.qty }}`) in place into `a`;
    anything unusual goes through the template."""
    p = " " * indent
    return (f"{p}o = scope.get(N{i})\n{p}if type(o) is dict and K{i} in o:\n{p}    a = o[K{i}]\n"
            f"{p}else:\n{p}    a = A{i}(scope)\n")


_DYN_CHECK = _NUMBER.format(x="a", int_case="pass") + "        d = d {op} a\n"

# ---- the float path of a chain of multiplications and divisions ending in a round
#
# For int and float operands the chain is first computed in binary floating point. Each float
# operand differs from the decimal its repr() writes (what the Decimal path computes with) by at
# most half a unit in the last place, a relative 2**-53; each multiplication or division and the
# final scaling by 10**digits add at most as much again. So the scaled float `y` is within a
# relative 1e-14 of the exact decimal result for chains of up to 10 steps (the Decimal path's own
# rounding to the context's precision, 20 digits at least, is smaller still). Half-up rounding
# only depends on that error when the exact value is near a half: whenever `y` is farther than a
# relative 1e-12 from one, rounding `y` to the nearest integer gives the Decimal path's
# coefficient, and int / 10**digits is the float that Decimal -> float gives (both correctly
# rounded). Near a half, at a magnitude of 2**50 and beyond, for zero and for non-finite values
# the chain goes on to the Decimal code below, which decides.

_FAST_HEAD = """\
        x = v
        t = type(x)
        if t is float or t is int:
"""

_FAST_DYN_CHECK = """\
            t = type(a)
            if t is float or t is int:
                x = x {op} a
            else:
                x = None
"""

_FAST_TAIL = """\
            if x is not None:
                y = x * SCALE
                if -2.0 ** 50 < y < 2.0 ** 50:
                    n = floor(y)
                    f = y - n
                    tol = (y if y > 0 else -y) * 1e-12
                    if f < 0.5 - tol:
                        pass
                    elif f > 0.5 + tol:
                        n += 1
                    else:
                        n = 0
                    if n:
{ret}
"""

_FAST_PLAIN = """\
                        return n // P10 if n % P10 == 0 else n / P10
"""

_FAST_NATIVE = """\
                        return {wrap}(Decimal(n).scaleb(-DIGITS))
"""

#: context traps that would make the Decimal path fail where the float path answers
_QUIET = (Inexact, Rounded, Subnormal, Underflow, Clamped)


def _fast_digits(steps: list[Step], ctx: Any) -> int | None:
    """The digits of the final round when the chain can take the float path, else None."""
    if not 2 <= len(steps) <= 11 or steps[-1].op != "round":
        return None
    if ctx.prec < 20 or any(ctx.traps[s] for s in _QUIET):
        return None
    for s in steps[:-1]:
        if s.op not in ("multiply", "divide") or (s.dynamic and s.name_key is None):
            return None
    exp = steps[-1].arg.as_tuple().exponent
    digits = -exp if isinstance(exp, int) else -1
    return digits if 0 <= digits <= 10 else None


def fuse(get: Compute, steps: list[Step], conv: Callable[[Any], Any] | None, final_plain: bool,
         generic: Compute) -> Compute:
    """One function computing `get` then `steps` (then `conv`, or JSON-ready numbers with
    `final_plain`), falling back to `generic` for anything but plain finite numbers."""
    # the thread's context (precision, traps) as the general path uses it, rounding half up
    half_up = getcontext().copy()
    half_up.rounding = ROUND_HALF_UP
    env: dict[str, Any] = {"Decimal": Decimal, "quantize": half_up.quantize, "get": get,
                           "generic": generic, "conv": conv, "number": decimal_to_number}
    body = []
    if any(s.dynamic for s in steps):
        body.append("        scope = run.scope\n")
    digits = _fast_digits(steps, half_up)
    if digits is not None:
        env["SCALE"], env["P10"], env["DIGITS"], env["floor"] = float(10 ** digits), 10 ** digits, digits, floor
        body.append(_FAST_HEAD)
        for i, s in enumerate(steps[:-1]):
            op = _OPS[s.op]
            if s.dynamic:
                env[f"N{i}"], env[f"K{i}"] = s.name_key  # type: ignore[misc]
                env[f"A{i}"] = s.arg
                body.append(_name_arg(i, 12) + _FAST_DYN_CHECK.format(op=op))
            else:
                env[f"F{i}"] = float(s.arg)
                body.append(f"            x = x {op} F{i}\n")
        if conv is None and final_plain:
            ret = _FAST_PLAIN
        else:
            ret = _FAST_NATIVE.format(wrap="conv" if conv is not None else "")
        body.append(_FAST_TAIL.format(ret=ret.rstrip("\n")))
    body.append(_INPUT)
    for i, s in enumerate(steps):
        env[f"A{i}"] = s.arg
        if s.op == "round":
            body.append(f"        d = quantize(d, A{i})\n")
        elif s.dynamic:
            if s.name_key is not None:
                env[f"N{i}"], env[f"K{i}"] = s.name_key
                body.append(_name_arg(i, 8))
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
    keys = getattr(get, "walk_keys", None)
    if keys is not None and 0 < len(keys) <= 4:  # a simple path: its walk inlined, as the getter does it
        for i, k in enumerate(keys):
            env[f"P{i}"] = k
        sub = "".join(f"[P{i}]" for i in range(len(keys)))
        read = (f"    try:\n        v = c{sub}\n"
                "    except (KeyError, IndexError, TypeError):\n        v = None\n")
    else:
        read = "    v = get(c, run)\n"
    src = ("def compute(c, run):\n"
           + read +
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
