"""ANSI X12 EDI as a map format.

Output: the map's fields build a tree of loops, segments, elements and components (target paths such
as `BEG/03`, `PO1Loop/PO1/02`, `N1#ship/01`); `X12Writer` writes its segments in the order the map
declares them and wraps them in the ISA/GS/ST ... SE/GE/IEA envelope, with control numbers that are
unique per sender/receiver pair (an SQLite counter in the Atom's data directory).

Input: `parse_interchange` reads an interchange (separators from the ISA segment), checks the
envelope (counts and control numbers) and gives an lxml tree (Interchange / FunctionalGroup /
TransactionSet, loops such as `PO1Loop`, segments with elements `BEG03`) that XPath sources read.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import sqlite3
import threading
import weakref
import zoneinfo
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lxml import etree

from ..errors import DocumentError, Location
from ..expressions import Constant, ExpressionSyntaxError, Template, compile_template
from ..spec import MISSING, Bool, CheckContext, Custom, Enum, Field, Int, ListOf, MapOf, Object, Spec, Str
from ..yamlio import Where
from ._values import MapError, evaluate, to_text, yaml_kind

#: a segment ID, with an optional instance label that is not written (`REF#dept`)
SEGMENT = re.compile(r"^([A-Z][A-Z0-9]{1,2})(?:#([A-Za-z0-9_\-]+))?$")
#: a Boomi-style element name: segment ID + two-digit position (`BEG03`, `PO102`, `N104`)
ELEMENT_NAME = re.compile(r"^([A-Z][A-Z0-9]{1,2})(\d{2})$")
_POSITION = re.compile(r"^\d{1,2}$")
_LOOP = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*(?:#[A-Za-z0-9_\-]+)?$")
_SEGMENT_ID = re.compile(r"^[A-Z][A-Z0-9]{1,2}$")
ENVELOPE = ("ISA", "GS", "ST", "SE", "GE", "IEA")

#: GS01 (functional identifier code) of common transaction sets
FUNCTIONAL_IDS = {
    "180": "AN", "204": "SM", "210": "IM", "214": "QM", "810": "IN", "820": "RA", "824": "AG", "830": "PS",
    "832": "SC", "846": "IB", "850": "PO", "852": "PD", "855": "PR", "856": "SH", "860": "PC", "861": "RC",
    "862": "SS", "864": "TX", "865": "CA", "940": "OW", "943": "AR", "944": "RE", "945": "SW", "990": "GF",
    "997": "FA", "999": "FA",
}

_N1_MEMBERS = ["N2", "N3", "N4", "NX2", "QTY", "REF", "PER", "SI", "DTM", "FOB", "SCH", "TD1", "TD5", "TD3",
               "TD4", "PKG"]
_PO1_MEMBERS = ["LIN", "SI", "CUR", "CN1", "PO3", "CTP", "PAM", "MEA", "PID", "PWK", "PO4", "REF", "PER", "SAC",
                "IT8", "CSH", "ITD", "DIS", "INC", "TAX", "FOB", "SDQ", "IT3", "DTM", "TC2", "TD1", "TD5", "TD3",
                "TD4", "PCT", "MAN", "MSG", "SPI", "TXI", "CTB", "QTY", "SCH", "PKG", "LS", "LDT", "N9", "N1", "LE",
                "SLN", "AMT", "LM"]

#: loops of the common transaction sets: the segment that starts a loop -> the segments (and nested
#: loops) it holds. A transaction set not listed here is read flat unless the input says `loops`.
BUILTIN_LOOPS: dict[str, dict[str, list[str]]] = {
    "850": {"SAC": ["CUR"], "N9": ["DTM", "MSG"], "N1": _N1_MEMBERS, "PO1": _PO1_MEMBERS,
            "SLN": ["MSG", "SI", "PID", "PO3", "TC2", "ADV", "DTM", "CTP", "PAM", "PO4", "TAX", "N9", "SAC", "QTY",
                    "N1"],
            "CTT": ["AMT"]},
    "855": {"SAC": ["CUR"], "N9": ["DTM", "MSG"], "N1": _N1_MEMBERS, "PO1": [*_PO1_MEMBERS, "ACK"],
            "ACK": ["DTM"], "CTT": ["AMT"]},
    "810": {"N1": ["N2", "N3", "N4", "REF", "PER", "DMG"], "N9": ["MSG"], "LM": ["LQ"],
            "IT1": ["CRC", "QTY", "CUR", "IT3", "TXI", "CTP", "PAM", "MEA", "PID", "PWK", "PKG", "PO4", "ITD", "REF",
                    "YNQ", "PER", "IT8", "SAC", "DTM", "CAD", "L7", "SR", "SLN", "N1", "LM"],
            "SAC": ["TXI"], "SLN": ["DTM", "REF", "PID", "SAC", "TC2", "TXI"], "ISS": ["PID"]},
    "856": {"HL": ["LIN", "SN1", "SLN", "PRF", "PO4", "PID", "MEA", "PWK", "PKG", "TD1", "TD5", "TD3", "TD4",
                   "TSD", "REF", "PER", "CLD", "MAN", "DTM", "FOB", "PAL", "N1", "SDQ", "ETD", "CUR", "SAC",
                   "GF", "YNQ"],
            "N1": ["N2", "N3", "N4", "REF", "PER", "FOB"], "SAC": ["CUR"]},
    "997": {"AK2": ["AK3", "AK5"], "AK3": ["AK4"]},
}

MAX_CONTROL = 999_999_999


# ------------------------------------------------------------------------------------------- options




def _separator(value: Any, where: Where, loc: Location, ctx: CheckContext) -> Any:
    if not isinstance(value, str) or len(value) != 1 or value.isalnum() or value == " ":
        ctx.error(loc, f"expected one character that is not a letter, a digit or a space, got {value!r}")
        return MISSING
    return value


def _text_or_template(value: Any, where: Where, loc: Location, ctx: CheckContext) -> Any:
    if isinstance(value, bool) or value is None or isinstance(value, (Mapping, list)):
        ctx.error(loc, f"expected a text or a template, got {yaml_kind(value)}")
        return MISSING
    return Str().check(value, where, loc, ctx)


def _code(width: int, pattern: str) -> Custom:
    """A code of digits and capitals; a YAML number (`version: 004010` reads as 4010) gets back its zeros."""
    rx = re.compile(pattern)

    def check(value: Any, where: Where, loc: Location, ctx: CheckContext) -> Any:
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            value = f"{value:0{width}d}"
        value = Str().check(value, where, loc, ctx)
        if value is MISSING:
            return MISSING
        if not rx.fullmatch(value):
            ctx.error(loc, f"'{value}' does not match {pattern}")
            return MISSING
        return value
    return Custom(check, {"type": ["string", "integer"], "pattern": pattern}, "code")


def _party_code(value: Any, where: Where, loc: Location, ctx: CheckContext) -> Any:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 100:
        value = f"{value:02d}"  # qualifier: 01 reads as the number 1
    return _text_or_template(value, where, loc, ctx)


_SEP = Custom(_separator, {"type": "string", "minLength": 1, "maxLength": 1}, "character")
_VALUE = Custom(_text_or_template, {"type": ["string", "integer"]}, "text or template")
_QUALIFIER = Custom(_party_code, {"type": ["string", "integer"]}, "text or template")

_PARTY = Spec([
    Field("qualifier", _QUALIFIER, default="ZZ", description="interchange ID qualifier (ISA05 / ISA07): 2 characters, "
                                                         "e.g. ZZ (mutually defined), 01 (DUNS), 12 (phone)"),
    Field("id", _VALUE, required=True, description="interchange ID (ISA06 / ISA08): up to 15 characters, padded "
                                                   "with spaces"),
])

X12_OUTPUT_SPEC = Spec([
    Field("transaction", _code(3, r"[0-9A-Z]{3}"), required=True,
          description="transaction set identifier (ST01): 850, 810, 856, ..."),
    Field("version", _code(6, r"[0-9A-Z]{6,12}"), default="004010",
          description="version / release / industry code (GS08): 004010, 005010, 004010VICS, ..."),
    Field("interchange_version", _code(5, r"\d{5}"),
          description="ISA12 (default: the first five characters of `version`, e.g. 00401)"),
    Field("functional_id", Str(r"[A-Z]{2}"),
          description="functional identifier code (GS01); default from the transaction set (850: PO, 810: IN, ...)"),
    Field("sender", Object(_PARTY), required=True, description="{qualifier, id}: ISA05 / ISA06"),
    Field("receiver", Object(_PARTY), required=True, description="{qualifier, id}: ISA07 / ISA08"),
    Field("application_sender", _VALUE, description="application sender's code (GS02; default: sender id)"),
    Field("application_receiver", _VALUE, description="application receiver's code (GS03; default: receiver id)"),
    Field("usage", _VALUE, default="P", description="usage indicator (ISA15): P (production), T (test), "
                                                    "I (information)"),
    Field("ack_requested", Bool(), default=False, description="ISA14: ask for an interchange acknowledgment (TA1)"),
    Field("authorization_qualifier", _code(2, r"\d{2}"), default="00", description="ISA01"),
    Field("authorization", Str(), default="", description="ISA02 (up to 10 characters)"),
    Field("security_qualifier", _code(2, r"\d{2}"), default="00", description="ISA03"),
    Field("security", Str(), default="", description="ISA04 (up to 10 characters)"),
    Field("implementation_reference", _VALUE, description="ST03, for versions that use it (005010 and later)"),
    Field("element_separator", _SEP, default="*", description="data element separator"),
    Field("sub_element_separator", _SEP, default=">", description="component element separator (ISA16)"),
    Field("repetition_separator", _SEP, default="^",
          description="repetition separator (ISA11, interchange version 00402 and later; before that ISA11 is U)"),
    Field("segment_terminator", _SEP, default="~", description="segment terminator"),
    Field("line_ending", Enum("none", "lf", "crlf"), default="none",
          description="written after each segment terminator"),
    Field("control_number", _VALUE,
          description="interchange and group control number to use (a template, e.g. from a process property) "
                      "instead of the Atom's counter"),
    Field("control_file", Str(), description="SQLite file of the control-number counter "
                                             "(default: x12-control-numbers.db in the Atom's data directory)"),
    Field("control_range", ListOf(Int(minimum=1, maximum=MAX_CONTROL)),
          description="[first, last]: the counter's numbers (default [1, 999999999]); after last it starts again "
                      "at first"),
    Field("timestamp", _VALUE, description="date and time of the envelope (template; default: now)"),
    Field("timezone", Str(), default="UTC", description="time zone of the envelope date and time"),
])

X12_INPUT_SPEC = Spec([
    Field("loops", MapOf(ListOf(Str())),
          description="loops of the transaction sets: first segment -> the segments (and nested loops) it holds; "
                      "default: the built-in loops of 810, 850, 855, 856 and 997"),
])


class X12Output:
    """The checked output options; `uses_scope` when a template needs the template scope."""

    def __init__(self, vals: dict[str, Any], values: dict[str, Template | Constant], uses_scope: bool) -> None:
        self.transaction: str = vals["transaction"]
        self.version: str = vals["version"]
        self.interchange_version: str = vals.get("interchange_version") or _isa_version(self.version)
        self.functional_id: str = vals.get("functional_id") or FUNCTIONAL_IDS.get(self.transaction, "")
        self.ack_requested: bool = vals["ack_requested"]
        self.authorization = (vals["authorization_qualifier"], vals["authorization"])
        self.security = (vals["security_qualifier"], vals["security"])
        self.element: str = vals["element_separator"]
        self.sub_element: str = vals["sub_element_separator"]
        self.repetition: str | None = (vals["repetition_separator"]
                                       if self.interchange_version >= "00402" else None)
        self.terminator: str = vals["segment_terminator"]
        self.line_ending: str = {"none": "", "lf": "\n", "crlf": "\r\n"}[vals["line_ending"]]
        self.control_file: str | None = vals.get("control_file")
        rng = vals.get("control_range") or [1, MAX_CONTROL]
        self.control_range: tuple[int, int] = (rng[0], rng[1])
        self.timezone = zoneinfo.ZoneInfo(vals["timezone"])
        #: option name -> template or constant (sender_qualifier, sender_id, receiver_..., usage, ...)
        self.values = values
        self.uses_scope = uses_scope


class X12Input:
    def __init__(self, loops: dict[str, list[str]] | None) -> None:
        self.loops = loops


def _isa_version(version: str) -> str:
    head = version[:5]
    return head if head.isdigit() else "00401"


def check_options(side: str, vals: dict[str, Any], where: Where, loc: Location,
                  ctx: CheckContext) -> X12Output | X12Input | None:
    """The x12 options of one side, checked (problems go to ctx, located); None when wrong."""
    before = len(ctx.problems)
    if side == "input":
        loops = vals.get("loops")
        if loops is not None:
            lw = where.child("loops")
            for start, members in loops.items():
                named = [(start, lw.key(start)), *((m, lw.child(start).value(i)) for i, m in enumerate(members))]
                for name, nloc in named:
                    if not _SEGMENT_ID.match(name):
                        ctx.error(nloc, f"'{name}' is not a segment ID (2 or 3 capital letters and digits)")
        return X12Input(loops) if len(ctx.problems) == before else None
    rng = vals.get("control_range")
    if rng is not None and (len(rng) != 2 or rng[0] > rng[1]):
        ctx.error(where.value("control_range"), f"expected [first, last] with first <= last, got {rng}")
    try:
        zoneinfo.ZoneInfo(vals["timezone"])
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        ctx.error(where.value("timezone"), f"unknown time zone '{vals['timezone']}'")
    if not vals.get("functional_id") and vals.get("transaction") not in FUNCTIONAL_IDS:
        ctx.error(where.value("transaction"), f"no known functional identifier (GS01) for transaction set "
                                              f"'{vals.get('transaction')}': give functional_id")
    seps = {k: vals[k] for k in ("element_separator", "sub_element_separator", "repetition_separator",
                                 "segment_terminator")}
    seen: dict[str, str] = {}
    for k, v in seps.items():
        if k == "repetition_separator" and (vals.get("interchange_version") or
                                            _isa_version(vals.get("version", "004010"))) < "00402":
            continue
        if v in seen:
            given = [n for n in (k, seen[v]) if n in (where.node or {})]
            ctx.error(where.value(given[0]) if given else loc,
                      f"{seen[v]} and {k} are both '{v}': the separators must differ")
        seen[v] = k
    for k, width in (("authorization", 10), ("security", 10)):
        if len(vals.get(k, "")) > width:
            ctx.error(where.value(k), f"{k} is longer than {width} characters")
    compiled: dict[str, Template | Constant] = {}
    uses_scope = False
    sources: list[tuple[str, Any, Location]] = []
    for party in ("sender", "receiver"):
        pv = vals.get(party) or {}
        pw = where.child(party)
        for k in ("qualifier", "id"):
            if k in pv:
                sources.append((f"{party}_{k}", pv[k], pw.value(k) if k in (pw.node or {}) else where.value(party)))
    for k in ("application_sender", "application_receiver", "usage", "implementation_reference", "control_number",
              "timestamp"):
        if k in vals:
            sources.append((k, vals[k], where.value(k) if k in (where.node or {}) else loc))
    for name, raw, vloc in sources:
        text = str(raw)
        if "{{" in text or "{%" in text:
            try:
                compiled[name] = compile_template(text)
            except ExpressionSyntaxError as exc:
                ctx.error(vloc, str(exc))
                continue
            uses_scope = True
            continue
        compiled[name] = Constant(text)
        problem = _check_value(name, text, vals)
        if problem:
            ctx.error(vloc, problem)
    if len(ctx.problems) > before:
        return None
    return X12Output(vals, compiled, uses_scope)


_WIDTHS = {"sender_qualifier": (2, 2), "receiver_qualifier": (2, 2), "sender_id": (1, 15), "receiver_id": (1, 15),
           "application_sender": (2, 15), "application_receiver": (2, 15), "implementation_reference": (1, 35)}


def _check_value(name: str, text: str, vals: Mapping[str, Any]) -> str | None:
    """A problem with one envelope value (a constant at load time, a template's result at run time)."""
    label = name.replace("_", " ")
    if name in _WIDTHS:
        lo, hi = _WIDTHS[name]
        if not lo <= len(text) <= hi:
            want = f"{lo}" if lo == hi else f"{lo} to {hi}"
            return f"{label} '{text}' must be {want} characters long"
    if name == "usage" and text not in ("P", "T", "I"):
        return f"usage '{text}' is not one of P, T, I"
    if name == "control_number":
        if not text.isdigit() or not 1 <= int(text) <= MAX_CONTROL:
            return f"control number '{text}' is not a number from 1 to {MAX_CONTROL}"
    if name == "timestamp":
        try:
            _parse_time(text, dt.UTC)
        except ValueError as exc:
            return str(exc)
    for k in ("element_separator", "sub_element_separator", "segment_terminator"):
        sep = vals.get(k)
        if sep and sep in text and name not in ("timestamp", "control_number"):
            return f"{label} '{text}' contains the {k.replace('_', ' ')} '{sep}'"
    return None


def _parse_time(value: Any, tz: dt.tzinfo) -> dt.datetime:
    if isinstance(value, dt.datetime):
        t = value
    elif isinstance(value, dt.date):
        t = dt.datetime(value.year, value.month, value.day)
    else:
        try:
            t = dt.datetime.fromisoformat(str(value).strip())
        except ValueError:
            raise ValueError(f"timestamp '{value}' is not an ISO 8601 date and time") from None
    if t.tzinfo is None:
        return t.replace(tzinfo=tz)
    return t.astimezone(tz)


# ------------------------------------------------------------------------------------------- targets


def target(parents: list[str], segs: list[str], kind: str) -> list[str]:
    """Check and normalise an x12 output target (raises ValueError with the problem).

    `parents` are the (normalised) names above it; `kind` is leaf, fields (a group with fields) or
    scalar (a repeating group of values). Returns the names to use (`BEG03` -> `BEG`, `03`; `1` -> `01`).
    """
    level, seg_id, prev = "loop", None, None
    for p in parents:
        _, level, seg_id = _step(level, p, seg_id, prev)
        prev = p
    out: list[str] = []
    for s in segs:
        names, level, seg_id = _step(level, s, seg_id, prev)
        out.extend(names)
        prev = s
    where = "/".join([*parents, *out])
    if kind == "leaf" and level == "segment":
        raise ValueError(f"'{where}' is a segment: it takes element fields, not a value (e.g. {where}/01)")
    if kind == "leaf" and level == "loop":
        raise ValueError(f"'{where}' is a loop (a segment ID is 2 or 3 capital letters and digits, an element "
                         "SEG/NN or SEGNN): a loop takes fields, not a value")
    if kind == "scalar" and level != "element":
        raise ValueError(f"a repeating group without fields gives repeated values: it must target an element "
                         f"(SEG/NN), not '{where}'")
    if kind == "fields" and level == "component":
        raise ValueError(f"'{where}' is a component: it takes a value, not fields")
    return out


def _step(level: str, name: str, seg_id: str | None, prev: str | None) -> tuple[list[str], str, str | None]:
    """(names, level of the last name, its segment) for one target name inside a `level` container."""
    if level == "loop":
        m = SEGMENT.match(name)
        if m:
            _no_envelope(m.group(1))
            return [name], "segment", m.group(1)
        m = ELEMENT_NAME.match(name)
        if m:
            _no_envelope(m.group(1))
            return [m.group(1), _position(m.group(2), name)], "element", m.group(1)
        if _POSITION.match(name):
            if prev is not None:
                raise ValueError(f"'{prev}' is not a segment ID (2 or 3 capital letters and digits): it is taken for "
                                 f"a loop, and '{name}', an element position, belongs under a segment")
            raise ValueError(f"'{name}' is an element position: it belongs under a segment (BEG/{name:0>2})")
        if _LOOP.match(name):
            return [name], "loop", None
        raise ValueError(f"'{name}' is not a segment ID (2 or 3 capital letters and digits: BEG, N1, REF#dept), "
                         "an element (BEG03) or a loop name")
    if level == "segment":
        if _POSITION.match(name):
            return [_position(name, name)], "element", seg_id
        m = ELEMENT_NAME.match(name)
        if m and m.group(1) == seg_id:
            return [_position(m.group(2), name)], "element", seg_id
        raise ValueError(f"'{name}' is not an element of segment {seg_id}: write its position "
                         f"({seg_id}/03 or 03, or {seg_id}03)")
    if level == "element":
        if _POSITION.match(name):
            return [_position(name, name)], "component", seg_id
        raise ValueError(f"'{name}' is not a component position (01 to 99) of a composite element")
    raise ValueError(f"'{name}': a component has no parts")


def _position(digits: str, name: str) -> str:
    n = int(digits)
    if not 1 <= n <= 99:
        raise ValueError(f"'{name}': positions go from 01 to 99")
    return f"{n:02d}"


def _no_envelope(seg: str) -> None:
    if seg in ENVELOPE:
        raise ValueError(f"{seg} is written by the envelope: set it with the output options (transaction, sender, "
                         "receiver, version, ...)")


# ------------------------------------------------------------------------------------------- writing


class X12Writer:
    """Writes the transaction sets a map built, in their envelope."""

    def __init__(self, opts: X12Output, map_name: str) -> None:
        self.o = opts
        self.what = f"map '{map_name}': output"
        forbidden = [opts.element, opts.sub_element, opts.terminator]
        names = {opts.element: "element separator", opts.sub_element: "sub-element separator",
                 opts.terminator: "segment terminator"}
        if opts.repetition:
            forbidden.append(opts.repetition)
            names[opts.repetition] = "repetition separator"
        self._forbidden = "".join(forbidden)
        self._names = names
        self._bad = re.compile("[" + re.escape(self._forbidden) + "\x00-\x1f\x7f]")

    # ---- the body
    def segments(self, tree: Any, set_no: int) -> list[str]:
        out: list[str] = []
        self._level(tree, out, set_no)
        return out

    def _level(self, node: Any, out: list[str], set_no: int) -> None:
        if not isinstance(node, dict):
            return
        for key, val in node.items():
            items = val if isinstance(val, list) else [val]
            m = SEGMENT.match(key)
            for it in items:
                if m:
                    seg = self._segment(m.group(1), it, set_no, len(out) + 2)
                    if seg is not None:
                        out.append(seg)
                else:
                    self._level(it, out, set_no)

    def _segment(self, sid: str, elements: Any, set_no: int, number: int) -> str | None:
        if not isinstance(elements, dict) or not elements:
            return None
        values: dict[int, str] = {}
        for pos, v in elements.items():
            text = self._element(v, sid, pos, set_no, number)
            if text:
                values[int(pos)] = text
        if not values:
            return None
        width = max(values)
        return self.o.element.join([sid, *(values.get(i, "") for i in range(1, width + 1))])

    def _element(self, v: Any, sid: str, pos: str, set_no: int, number: int) -> str:
        where = f"transaction set {set_no}, segment {number} ({sid}), element {sid}{pos}"
        if isinstance(v, list):
            parts = [self._element(x, sid, pos, set_no, number) for x in v]
            parts = [p for p in parts if p]
            if len(parts) > 1 and self.o.repetition is None:
                raise MapError(f"{self.what}: {where}: {len(parts)} values, but repeated elements need interchange "
                               f"version 00402 or later (this interchange is {self.o.interchange_version})")
            return (self.o.repetition or "").join(parts)
        if isinstance(v, dict):
            comps: dict[int, str] = {}
            for k, c in v.items():
                if not (isinstance(k, str) and _POSITION.match(k)) or not 1 <= int(k) <= 99:
                    raise MapError(f"{self.what}: {where}: a mapping is a composite element, its keys must be "
                                   f"component positions (01 to 99), got '{k}'")
                if isinstance(c, (dict, list)):
                    raise MapError(f"{self.what}: {where}, component {int(k):02d}: expected a value, got "
                                   f"{'a mapping' if isinstance(c, dict) else 'a list'}")
                t = self._text(c, f"{where}, component {int(k):02d}")
                if t:
                    comps[int(k)] = t
            if not comps:
                return ""
            return self.o.sub_element.join(comps.get(i, "") for i in range(1, max(comps) + 1))
        return self._text(v, where)

    def _text(self, v: Any, where: str) -> str:
        if v is None:
            return ""
        if type(v) is str:
            text = v
        elif type(v) is float and v.is_integer() and abs(v) < 2**53:
            text = str(int(v))  # 40.0 -> 40
        else:
            text = to_text(v)
        m = self._bad.search(text)
        if m:
            ch = m.group(0)
            what = (f"the {self._names[ch]} '{ch}'" if ch in self._names else f"a control character {ch!r}")
            raise MapError(f"{self.what}: {where}: value {text[:40]!r} contains {what}; X12 has no escape "
                           "character: change the value (e.g. with a replace function) or the separators")
        return text

    # ---- the envelope
    def value(self, name: str, run: Any, default: str = "") -> str:
        t = self.o.values.get(name)
        if t is None:
            return default
        if isinstance(t, Constant):
            return str(t.evaluate({}))
        try:
            v = evaluate(t, run.scope)
        except DocumentError as exc:
            raise MapError(f"{self.what}: {name.replace('_', ' ')}: {exc}") from None
        text = "" if v is None else to_text(v).strip()
        if not text and name in ("sender_id", "receiver_id", "sender_qualifier", "receiver_qualifier", "usage"):
            raise MapError(f"{self.what}: {name.replace('_', ' ')} is empty ({t.source})")
        return text

    def write(self, sets: list[Any], run: Any, ctx: Any) -> tuple[bytes, dict[str, str]]:
        """The interchange holding one transaction set per tree, and the document properties to set."""
        o = self.o
        if not sets:
            raise MapError(f"{self.what}: there is no transaction set to write (the map-level foreach found no "
                           "items)")
        bodies = [self.segments(tree, i) for i, tree in enumerate(sets, 1)]
        for i, body in enumerate(bodies, 1):
            if not body:
                raise MapError(f"{self.what}: transaction set {i} has no segments (every field was empty)")
        v: dict[str, str] = {}
        for name in ("sender_qualifier", "sender_id", "receiver_qualifier", "receiver_id", "usage",
                     "implementation_reference", "control_number", "timestamp"):
            v[name] = self.value(name, run, {"sender_qualifier": "ZZ", "receiver_qualifier": "ZZ",
                                             "usage": "P"}.get(name, ""))
        v["application_sender"] = self.value("application_sender", run, v["sender_id"])
        v["application_receiver"] = self.value("application_receiver", run, v["receiver_id"])
        seps = {"element_separator": o.element, "sub_element_separator": o.sub_element,
                "segment_terminator": o.terminator, "control_range": list(o.control_range)}
        for name, text in v.items():
            if text and name != "timestamp":
                problem = _check_value(name, text, seps)
                if problem:
                    raise MapError(f"{self.what}: {problem}")
        try:
            when = _parse_time(v["timestamp"], o.timezone) if v["timestamp"] else dt.datetime.now(o.timezone)
        except ValueError as exc:
            raise MapError(f"{self.what}: {exc}") from None
        sender = f"{v['sender_qualifier']}:{v['sender_id']}"
        receiver = f"{v['receiver_qualifier']}:{v['receiver_id']}"
        if v["control_number"]:
            number = int(v["control_number"])
        else:
            number = next_control_number(ctx, o.control_file, sender, receiver, o.control_range, self.what)
        icn = f"{number:09d}"
        e = o.element
        isa = e.join([
            "ISA", o.authorization[0], o.authorization[1].ljust(10), o.security[0], o.security[1].ljust(10),
            v["sender_qualifier"], v["sender_id"].ljust(15), v["receiver_qualifier"], v["receiver_id"].ljust(15),
            when.strftime("%y%m%d"), when.strftime("%H%M"), o.repetition or "U", o.interchange_version, icn,
            "1" if o.ack_requested else "0", v["usage"], o.sub_element])
        if len(isa) != 105:
            raise MapError(f"{self.what}: the ISA segment is {len(isa)} characters long, expected 105: {isa!r}")
        segs = [isa, e.join(["GS", o.functional_id, v["application_sender"], v["application_receiver"],
                             when.strftime("%Y%m%d"), when.strftime("%H%M"), str(number), "X", o.version])]
        st_numbers = []
        for i, body in enumerate(bodies, 1):
            st = f"{i:04d}"
            st_numbers.append(st)
            head = ["ST", o.transaction, st]
            if v["implementation_reference"]:
                head.append(v["implementation_reference"])
            segs.append(e.join(head))
            segs.extend(body)
            segs.append(e.join(["SE", str(len(body) + 2), st]))
        segs.append(e.join(["GE", str(len(bodies)), str(number)]))
        segs.append(e.join(["IEA", "1", icn]))
        end = o.terminator + o.line_ending
        data = (end.join(segs) + end).encode("utf-8")
        props = {"x12_interchange_control_number": icn, "x12_group_control_number": str(number),
                 "x12_transaction_control_number": st_numbers[0], "x12_transaction_count": str(len(bodies)),
                 "x12_sender_id": v["sender_id"], "x12_receiver_id": v["receiver_id"]}
        return data, props


# ------------------------------------------------------------------------------------------- control numbers

_lock = threading.Lock()
_databases: dict[str, tuple[int, sqlite3.Connection]] = {}
_memory: weakref.WeakKeyDictionary[Any, dict[tuple[str, str], int]] = weakref.WeakKeyDictionary()
COUNTER_FILE = "x12-control-numbers.db"


def data_dir(ctx: Any) -> Path | None:
    """The Atom's data directory for a map context, or None when the counter is kept in memory.

    A context with `data_dir` (LocalMapContext) names it; an execution of a served Atom keeps its
    data next to the execution store; `atom run` uses ATOM_DATA_DIR, else `.atom`. Process tests and
    contexts without a data directory count in memory.
    """
    d = getattr(ctx, "data_dir", None)
    if d:
        return Path(d)
    engine = getattr(ctx, "engine", None)
    if engine is None or str(getattr(ctx, "execution_type", "")).startswith("test"):
        return None
    store = getattr(getattr(engine, "recorder", None), "path", None)
    if store is not None:
        return Path(store).parent
    return Path(os.environ.get("ATOM_DATA_DIR") or ".atom")


def next_control_number(ctx: Any, control_file: str | None, sender: str, receiver: str,
                        rng: tuple[int, int], what: str) -> int:
    """The next control number of a sender/receiver pair: the number after the last one given out,
    back to the first of the range after its last."""
    testing = str(getattr(ctx, "execution_type", "")).startswith("test")
    path: Path | None = None
    if not testing:
        path = Path(control_file) if control_file else (d / COUNTER_FILE if (d := data_dir(ctx)) else None)
    if path is None:
        owner = getattr(ctx, "engine", None) or ctx
        with _lock:
            counts = _memory.setdefault(owner, {})
            n = _after(counts.get((sender, receiver)), rng)
            counts[(sender, receiver)] = n
            return n
    try:
        with _lock:
            db = _database(path)
            db.execute("BEGIN IMMEDIATE")
            try:
                row = db.execute("SELECT last FROM x12_control_numbers WHERE sender = ? AND receiver = ?",
                                 (sender, receiver)).fetchone()
                n = _after(row[0] if row else None, rng)
                db.execute("INSERT INTO x12_control_numbers (sender, receiver, last, updated) VALUES (?, ?, ?, ?) "
                           "ON CONFLICT (sender, receiver) DO UPDATE SET last = excluded.last, "
                           "updated = excluded.updated",
                           (sender, receiver, n, dt.datetime.now(dt.UTC).isoformat(timespec="seconds")))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            return n
    except (sqlite3.Error, OSError) as exc:
        raise MapError(f"{what}: cannot take the next control number from {path}: {exc}") from None


def close_counters() -> None:
    """Close the counter files this process has open (they are opened again when needed)."""
    with _lock:
        for _, db in _databases.values():
            db.close()
        _databases.clear()


def _after(last: int | None, rng: tuple[int, int]) -> int:
    lo, hi = rng
    if last is None or last < lo or last >= hi:
        return lo
    return last + 1


def _database(path: Path) -> sqlite3.Connection:
    key = str(path.resolve())
    got = _databases.get(key)
    if got is not None and got[0] == os.getpid():
        return got[1]
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA busy_timeout=30000")
    db.execute("CREATE TABLE IF NOT EXISTS x12_control_numbers (sender TEXT NOT NULL, receiver TEXT NOT NULL, "
               "last INTEGER NOT NULL, updated TEXT NOT NULL, PRIMARY KEY (sender, receiver))")
    _databases[key] = (os.getpid(), db)
    return db


# ------------------------------------------------------------------------------------------- reading


class _Seg:
    __slots__ = ("elements", "id", "number")

    def __init__(self, number: int, sid: str, elements: list[str]) -> None:
        self.number, self.id, self.elements = number, sid, elements


def _fail(message: str) -> DocumentError:
    return DocumentError(f"document is not a valid X12 interchange: {message}")


def parse_interchange(text: str, opts: X12Input | None) -> tuple[Any, Any]:
    """(root element, context element): the interchange as an lxml tree, and its first transaction
    set (the root when it has none). Raises DocumentError naming the segment and the problem."""
    body = text.lstrip("\ufeff \t\r\n")
    if not body.startswith("ISA"):
        raise _fail(f"it does not start with an ISA segment (it starts with {body[:20]!r})")
    if len(body) < 106:
        raise _fail("the ISA segment is truncated (an interchange starts with a 106-character ISA segment)")
    elem = body[3]
    if elem.isalnum() or elem in " \r\n":
        raise _fail(f"segment 1 (ISA): {elem!r} cannot be the element separator")
    # ISA has 16 elements: the 16th is one character (the sub-element separator), the segment terminator follows
    pos = 3
    for _ in range(15):
        pos = body.find(elem, pos + 1)
        if pos < 0:
            raise _fail("segment 1 (ISA): expected 16 elements")
    if pos + 2 >= len(body):
        raise _fail("segment 1 (ISA) is truncated")
    sub, term = body[pos + 1], body[pos + 2]
    if len({elem, sub, term}) != 3 or sub.isalnum() or term.isalnum():
        raise _fail(f"segment 1 (ISA): separators element {elem!r}, sub-element {sub!r}, terminator {term!r} "
                    "are not three different non-alphanumeric characters")
    raw = body.split(term)
    segs: list[_Seg] = []
    for chunk in raw:
        s = chunk.strip("\r\n")
        if not s:
            continue
        n = len(segs) + 1
        parts = s.split(elem)
        sid = parts[0]
        if not _SEGMENT_ID.match(sid):
            raise _fail(f"segment {n}: {sid[:20]!r} is not a segment ID (2 or 3 capital letters and digits)")
        if len(parts) > 100:
            raise _fail(f"segment {n} ({sid}) has {len(parts) - 1} elements (at most 99)")
        segs.append(_Seg(n, sid, parts[1:]))
    isa = segs[0]
    if len(isa.elements) != 16:
        raise _fail(f"segment 1 (ISA) has {len(isa.elements)} elements, expected 16")
    icn = isa.elements[12]
    if not (len(icn) == 9 and icn.isdigit()):
        raise _fail(f"segment 1 (ISA): ISA13 (interchange control number) {icn!r} is not 9 digits")
    rep = isa.elements[10]
    repetition = rep if (len(rep) == 1 and not rep.isalnum() and rep not in (elem, sub, term, " ")
                         and isa.elements[11] >= "00402") else None
    b = _Builder(elem, sub, repetition, opts.loops if opts is not None else None)
    root = etree.Element("Interchange")
    b.segment(root, isa, raw=True)
    first_set = b.structure(segs, root)
    return root, (first_set if first_set is not None else root)


class _Builder:
    def __init__(self, elem: str, sub: str, repetition: str | None, loops: dict[str, list[str]] | None) -> None:
        self.elem, self.sub, self.rep, self.loops = elem, sub, repetition, loops

    def segment(self, parent: Any, seg: _Seg, raw: bool = False) -> None:
        """The segment as an element with one child per element (`BEG03`); a composite has children
        (`PO10701`), a repeated element is repeated. `raw` (ISA): values as they are, spaces trimmed."""
        el = etree.SubElement(parent, seg.id)
        sid = seg.id
        try:
            for i, value in enumerate(seg.elements, 1):
                if raw:
                    value = value.strip()
                    if value:
                        etree.SubElement(el, f"{sid}{i:02d}").text = value
                    continue
                if not value:
                    continue
                name = f"{sid}{i:02d}"
                for rv in (value.split(self.rep) if self.rep and self.rep in value else [value]):
                    if not rv:
                        continue
                    child = etree.SubElement(el, name)
                    if self.sub in rv:
                        for j, comp in enumerate(rv.split(self.sub), 1):
                            if comp:
                                etree.SubElement(child, f"{name}{j:02d}").text = comp
                    else:
                        child.text = rv
        except ValueError as exc:
            raise _fail(f"segment {seg.number} ({sid}): the text is not valid: {exc}") from None

    def structure(self, segs: list[_Seg], root: Any) -> Any:
        i, n = 1, len(segs)
        groups = 0
        first_set = None
        last = segs[-1]
        while i < n and segs[i].id == "GS":
            gs = segs[i]
            group = etree.SubElement(root, "FunctionalGroup")
            self.segment(group, gs)
            gcn = _element(gs, 6)
            if not (gcn.isdigit() and len(gcn) <= 9):
                raise _fail(f"segment {gs.number} (GS): GS06 (group control number) {gcn!r} is not a number of "
                            "1 to 9 digits")
            groups += 1
            i += 1
            sets = 0
            while i < n and segs[i].id == "ST":
                st = segs[i]
                stcn = _element(st, 2)
                if not (4 <= len(stcn) <= 9):
                    raise _fail(f"segment {st.number} (ST): ST02 (transaction set control number) {stcn!r} must "
                                "be 4 to 9 characters")
                j = i + 1
                while j < n and segs[j].id not in ("SE", "ST", "GE", "GS", "IEA", "ISA"):
                    j += 1
                if j >= n:
                    raise _fail(f"the interchange is truncated: transaction set {stcn} (segment {st.number}) has no "
                                f"SE segment (the last segment is {last.number} ({last.id}))")
                if segs[j].id != "SE":
                    raise _fail(f"segment {segs[j].number} ({segs[j].id}): transaction set {stcn} (segment "
                                f"{st.number}) has no SE segment before it")
                se = segs[j]
                count = j - i + 1
                said = _number(se, 1, "SE01 (number of included segments)")
                if said != count:
                    raise _fail(f"segment {se.number} (SE): SE01 says {said} segments, the transaction set has "
                                f"{count} (ST to SE)")
                if _element(se, 2) != stcn:
                    raise _fail(f"segment {se.number} (SE): SE02 {_element(se, 2)!r} does not match ST02 {stcn!r} "
                                f"(segment {st.number})")
                ts = etree.SubElement(group, "TransactionSet")
                if first_set is None:
                    first_set = ts
                self.segment(ts, st)
                self.transaction(ts, segs[i + 1:j], _element(st, 1))
                self.segment(ts, se)
                sets += 1
                i = j + 1
            if i >= n:
                raise _fail(f"the interchange is truncated: functional group {gcn} (segment {gs.number}) has no GE "
                            f"segment (the last segment is {last.number} ({last.id}))")
            ge = segs[i]
            if ge.id != "GE":
                raise _fail(f"segment {ge.number} ({ge.id}) is outside a transaction set (expected ST or GE)")
            said = _number(ge, 1, "GE01 (number of transaction sets)")
            if said != sets:
                raise _fail(f"segment {ge.number} (GE): GE01 says {said} transaction sets, the group has {sets}")
            if _element(ge, 2).lstrip("0") != gcn.lstrip("0"):
                raise _fail(f"segment {ge.number} (GE): GE02 {_element(ge, 2)!r} does not match GS06 {gcn!r} "
                            f"(segment {gs.number})")
            self.segment(group, ge)
            i += 1
        if i >= n:
            raise _fail(f"the interchange is truncated: no IEA segment (the last segment is {last.number} "
                        f"({last.id}))")
        iea = segs[i]
        if iea.id != "IEA":
            raise _fail(f"segment {iea.number} ({iea.id}) is outside a functional group (expected GS or IEA)")
        said = _number(iea, 1, "IEA01 (number of functional groups)")
        if said != groups:
            raise _fail(f"segment {iea.number} (IEA): IEA01 says {said} functional groups, the interchange has "
                        f"{groups}")
        isa13 = segs[0].elements[12]
        if _element(iea, 2) != isa13:
            raise _fail(f"segment {iea.number} (IEA): IEA02 {_element(iea, 2)!r} does not match ISA13 {isa13!r}")
        self.segment(root, iea)
        if i + 1 < n:
            extra = segs[i + 1]
            raise _fail(f"segment {extra.number} ({extra.id}) comes after IEA: one interchange per document")
        return first_set

    def transaction(self, parent: Any, segs: list[_Seg], set_id: str) -> None:
        loops = self.loops if self.loops is not None else BUILTIN_LOOPS.get(set_id, {})
        members = {k: set(v) for k, v in loops.items()}
        stack: list[tuple[Any, set[str] | None]] = [(parent, None)]
        for seg in segs:
            sid = seg.id
            while len(stack) > 1 and sid not in (stack[-1][1] or ()):
                stack.pop()
            container = stack[-1][0]
            if sid in members:
                loop = etree.SubElement(container, f"{sid}Loop")
                self.segment(loop, seg)
                stack.append((loop, members[sid]))
            else:
                self.segment(container, seg)


def _element(seg: _Seg, i: int) -> str:
    return seg.elements[i - 1].strip() if len(seg.elements) >= i else ""


def _number(seg: _Seg, i: int, label: str) -> int:
    v = _element(seg, i)
    if not (v.isdigit() and len(v) <= 10):
        raise _fail(f"segment {seg.number} ({seg.id}): {label} {v[:20]!r} is not a number (1 to 10 digits)")
    return int(v)
