"""Value helpers shared by the map modules: errors, blank test, text and JSON conversions, output types."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from math import isfinite
from typing import Any

from ..document import dump_json
from ..errors import DocumentError


class MapValueError(DocumentError):
    """A value could not be computed (function, conversion, template); the field adds its name."""


class MapError(DocumentError):
    """A map failed for a document; the message already names the map and the target field."""


def evaluate(template: Any, scope: dict[str, Any]) -> Any:
    """Evaluate a template; a missing name or attribute raises ExpressionError naming the template."""
    return template.evaluate(scope)


def is_blank(value: Any) -> bool:
    """None, an empty or whitespace-only string, or an empty list."""
    if value is None:
        return True
    if type(value) is str:
        return not value.strip()
    if type(value) is list:
        return not value
    return False


def to_text(value: Any) -> str:
    """The text form of a value, as written into XML, CSV and flat files and into properties."""
    t = type(value)
    if t is str:
        return value  # type: ignore[no-any-return]
    if t is bool:
        return "true" if value else "false"
    if t is int:
        return str(value)
    if t is float:
        return repr(value)
    if t is Decimal:
        return format(value, "f")
    if value is None:
        return ""
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, (dict, list)):
        return dump_json(plain(value)).decode()
    return str(value)


def plain(value: Any) -> Any:
    """A JSON-ready value: Decimals become int or float, dates ISO strings (containers deeply)."""
    t = type(value)
    if t is str or t is int or t is bool or t is float or value is None:
        return value
    if t is Decimal:
        return decimal_to_number(value)
    if t is dict:
        return {k: plain(v) for k, v in value.items()}
    if t is list:
        return [plain(v) for v in value]
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    return value


def decimal_to_number(d: Decimal) -> int | float:
    f = float(d)
    if not f.is_integer() and isfinite(f):  # not whole: the float (the common case, one test)
        return f
    if d == d.to_integral_value():
        return int(d)
    return f


def to_decimal(value: Any) -> Decimal:
    """A finite Decimal from a number or numeric text; MapValueError otherwise."""
    t = type(value)
    if t is Decimal:
        return value  # type: ignore[no-any-return]
    if t is not bool and t is not int and t is not float and t is not str:
        value = unwrap(value)
        t = type(value)
    if t is int:
        return Decimal(value)
    if t is float:
        d = Decimal(repr(value))
    elif t is str:
        try:
            d = Decimal(value.strip())
        except InvalidOperation:
            raise MapValueError(f"'{value}' is not a number") from None
    else:
        raise MapValueError(f"{describe(value)} is not a number")
    if not d.is_finite():
        raise MapValueError(f"'{value}' is not a finite number")
    return d


def unwrap(value: Any) -> Any:
    """Subclasses of the YAML scalar types (as the YAML loader makes them) as the plain types."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str(value)
    return value


def describe(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return f"'{value[:60]}'"
    return f"{to_text(value)[:60]}"


# ---------------------------------------------------------------------------------------- output types

_TRUE = frozenset(("true", "yes", "y", "1", "on"))
_FALSE = frozenset(("false", "no", "n", "0", "off"))


def conv_string(value: Any) -> Any:
    return None if value is None else to_text(value)


def conv_int(value: Any) -> Any:
    t = type(value)
    if t is int:
        return value
    if value is None or (t is str and not value.strip()):
        return None
    if t is bool:
        return int(value)
    if t is str:
        try:
            return int(value.strip())
        except ValueError:
            pass
    try:
        d = to_decimal(value)
    except MapValueError:
        raise MapValueError(f"cannot convert {describe(value)} to int") from None
    if d != d.to_integral_value():
        raise MapValueError(f"cannot convert {describe(value)} to int: it has a fraction")
    return int(d)


def conv_float(value: Any) -> Any:
    t = type(value)
    if t is float:
        return value
    if value is None or (t is str and not value.strip()):
        return None
    try:
        return float(to_decimal(value))
    except MapValueError:
        raise MapValueError(f"cannot convert {describe(value)} to float") from None


def conv_number(value: Any) -> Any:
    t = type(value)
    if (t is int or t is float) and t is not bool:
        return value
    if value is None or (t is str and not value.strip()):
        return None
    if t is str:
        if "." not in value and "e" not in value and "E" not in value:
            try:
                return int(value)
            except ValueError:
                pass
        try:
            f = float(value)
        except ValueError:
            raise MapValueError(f"cannot convert {describe(value)} to a number") from None
        if not math.isfinite(f):
            raise MapValueError(f"cannot convert {describe(value)} to a number") from None
        return f
    try:
        d = to_decimal(value)
    except MapValueError:
        raise MapValueError(f"cannot convert {describe(value)} to a number") from None
    return decimal_to_number(d)


def conv_bool(value: Any) -> Any:
    t = type(value)
    if t is bool:
        return value
    if value is None or (t is str and not value.strip()):
        return None
    if t is str:
        s = value.strip().lower()
        if s in _TRUE:
            return True
        if s in _FALSE:
            return False
    elif t is int or t is Decimal or t is float:
        if value in (0, 1):
            return bool(value)
    raise MapValueError(f"cannot convert {describe(value)} to bool (use true/false, yes/no, 1/0)")


CONVERSIONS = {
    "string": conv_string,
    "int": conv_int,
    "float": conv_float,
    "number": conv_number,
    "bool": conv_bool,
}


def yaml_kind(value: Any) -> str:
    """How a load-time message names a YAML value of the wrong shape."""
    if value is None:
        return "nothing"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"'{value}'"
