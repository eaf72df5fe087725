"""X12 EDI as a map format: 850s written with their envelope (exact text), separators, empty values,
values that cannot be written, control numbers that survive a restart, and interchanges read back,
checked and refused."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from atom.document import Document
from atom.engine import Engine
from atom.errors import DocumentError
from atom.loader import load_directory
from atom.maps import CompiledMap, LocalMapContext
from atom.maps._x12 import close_counters, parse_interchange
from atom.store import SqliteStore

from .test_maps import build, problems

DOCS = Path(__file__).resolve().parents[1] / "docs" / "maps.md"

PO_XML = """<?xml version="1.0" encoding="UTF-8"?>
<order-header>
  <id type="integer">4501</id>
  <created-at type="dateTime">2026-03-02T09:14:27-08:00</created-at>
  <po-number>4501</po-number>
  <currency><code>USD</code></currency>
  <supplier><name>Globex Industrial Supply</name><number>GLX-0042</number></supplier>
  <ship-to-address>
    <name>Acme Springfield DC</name><street1>742 Evergreen Terrace</street1><city>Springfield</city>
    <state>IL</state><postal-code>62704</postal-code><country><code>US</code></country>
  </ship-to-address>
  <order-lines type="array">
    <order-line><line-num>1</line-num><description>Nitrile gloves, size L</description>
      <quantity type="decimal">40.0</quantity><price type="decimal">8.75</price><uom><code>BX</code></uom>
      <item><name>GLV-NIT-L</name></item><source-part-num>GX-55210</source-part-num></order-line>
    <order-line><line-num>2</line-num><description>Safety glasses, clear</description>
      <quantity type="decimal">12.0</quantity><price type="decimal">4.10</price><uom><code>EA</code></uom>
      <source-part-num>GX-31007</source-part-num></order-line>
  </order-lines>
</order-header>
"""

MAP_850 = """
map: po-to-850
input: xml
output:
  format: x12
  transaction: "850"
  sender: {qualifier: ZZ, id: ACMECORP}
  receiver: {qualifier: "01", id: "123456789"}
  usage: T
  timestamp: "2026-03-02T17:14:00Z"
  OPTIONS
fields:
  BEG/01: {value: "00"}
  BEG/02: {value: SA}
  BEG03: {source: po-number, required: true}
  BEG/05: {source: created-at, function: {date_format: {to: yyyyMMdd}}}
  CUR/01: {value: BY}
  CUR/02: currency/code
  N1Loop#vendor:
    source: supplier
    fields: {N1/01: {value: VN}, N1/02: name, N1/03: {value: "92"}, N1/04: number}
  N1Loop#ship:
    source: ship-to-address
    fields:
      N1/01: {value: ST}
      N1/02: name
      N3/01: street1
      N3/02: street2
      N4/01: city
      N4/02: state
      N4/03: postal-code
      N4/04: country/code
  PO1Loop:
    foreach: order-lines/order-line
    fields:
      PO1/01: line-num
      PO1/02: {source: quantity, type: number}
      PO1/03: uom/code
      PO1/04: {source: price, type: number}
      PO1/06: {value: BP, when: "{{ xpath(item, 'boolean(item/name)') }}"}
      PO1/07: item/name
      PO1/08: {value: VP}
      PO1/09: source-part-num
      PID: {fields: {"01": {value: F}, "05": description}}
  CTT/01: count(order-lines/order-line)
  CTT/02: {source: {foreach: order-lines/order-line, source: quantity}, function: sum, type: number}
"""

EXPECTED_850 = [
    "ISA*00*          *00*          *ZZ*ACMECORP       *01*123456789      *260302*1714*U*00401*000000001*0*T*>",
    "GS*PO*ACMECORP*123456789*20260302*1714*1*X*004010",
    "ST*850*0001",
    "BEG*00*SA*4501**20260302",
    "CUR*BY*USD",
    "N1*VN*Globex Industrial Supply*92*GLX-0042",
    "N1*ST*Acme Springfield DC",
    "N3*742 Evergreen Terrace",
    "N4*Springfield*IL*62704*US",
    "PO1*1*40*BX*8.75**BP*GLV-NIT-L*VP*GX-55210",
    "PID*F****Nitrile gloves, size L",
    "PO1*2*12*EA*4.1****VP*GX-31007",
    "PID*F****Safety glasses, clear",
    "CTT*2*52",
    "SE*13*0001",
    "GE*1*1",
    "IEA*1*000000001",
]


def map_850(options: str = "") -> CompiledMap:
    return build(MAP_850.replace("OPTIONS", options or "line_ending: none"), "po-to-850")


def segments(data: bytes, terminator: str = "~") -> list[str]:
    text = data.decode()
    assert text.endswith(terminator) or text.endswith(terminator + "\n") or text.endswith(terminator + "\r\n")
    return [s.strip("\r\n") for s in text.split(terminator) if s.strip("\r\n")]


# --------------------------------------------------------------------------------------------- writing


def test_850_with_two_lines_and_its_envelope() -> None:
    ctx = LocalMapContext()
    out = map_850().apply(Document(PO_XML), ctx)
    text = out.data.decode()
    assert "\n" not in text  # line_ending: none
    assert segments(out.data) == EXPECTED_850
    isa = text[:text.index("~")]
    assert len(isa) == 105 and text[105] == "~"  # fixed width: 106 characters with the terminator
    fields = isa.split("*")
    assert [len(f) for f in fields] == [3, 2, 10, 2, 10, 2, 15, 2, 15, 6, 4, 1, 5, 9, 1, 1, 1]
    assert out.props == {"x12_interchange_control_number": "000000001", "x12_group_control_number": "1",
                         "x12_transaction_control_number": "0001", "x12_transaction_count": "1",
                         "x12_sender_id": "ACMECORP", "x12_receiver_id": "123456789"}

    # the next document gets the next control number, in ISA13, GS06, GE02 and IEA02
    again = segments(map_850().apply(Document(PO_XML), ctx).data)
    assert again[0].split("*")[13] == "000000002"
    assert again[1].split("*")[6] == "2"
    assert again[-2:] == ["GE*1*2", "IEA*1*000000002"]


def test_the_docs_example_gives_the_documented_interchange() -> None:
    section = DOCS.read_text(encoding="utf-8").split("### Writing X12", 1)[1].split("### Control numbers", 1)[0]
    blocks = re.findall(r"```(\w*)\n(.*?)```", section, re.S)
    (_, map_text), (_, order), (_, expected) = blocks[:3]
    assert map_text.startswith("map: order-to-850")
    m = build(map_text.replace("  line_ending: lf\n", "  line_ending: lf\n  timestamp: 2026-11-22T09:30:00Z\n"),
              "order-to-850")
    ctx = LocalMapContext(properties={"partner_duns": "123456789"})
    assert m.apply(Document(order), ctx).data.decode() == expected
    # the documented error: the same order without the regex_replace of N102
    bare = build(map_text.replace('{source: $.name, functions: [{regex_replace: ["[*~>^]", " "]}, {truncate: 60}]}',
                                  "$.name"), "order-to-850")
    with pytest.raises(DocumentError) as exc:
        bare.apply(Document(order), LocalMapContext(properties={"partner_duns": "123456789"}))
    documented = re.search(r"\nmap 'to-850' \(order-to-850\): (map 'order-to-850': output: .*)\n", section)
    assert documented is not None
    assert str(exc.value) == documented.group(1)


def test_separator_options_composites_and_repeated_elements() -> None:
    m = build("""
        input: json
        output:
          format: x12
          transaction: "856"
          version: "005010"
          sender: {id: ACME}
          receiver: {qualifier: "12", id: "8005551234"}
          element_separator: "|"
          sub_element_separator: ":"
          repetition_separator: "!"
          segment_terminator: "'"
          line_ending: crlf
          implementation_reference: "005010X220"
          ack_requested: true
          timestamp: "2026-03-02T23:30:00-06:00"
          timezone: America/Chicago
        fields:
          BSN/01: {value: "00"}
          BSN/02: $.id
          HL: {foreach: "$.levels[*]", fields: {"01": $.n, "03": $.code}}
          TD5/01/01: {value: A}
          TD5/01/03: {value: C}
          MEA/03: {foreach: "$.weights[*]"}
        """)
    out = m.apply(Document(json.dumps({"id": "SH-1", "levels": [{"n": 1, "code": "S"}, {"n": 2, "code": "O"}],
                                       "weights": [10, 12.5]})), LocalMapContext())
    text = out.data.decode()
    assert text.split("\r\n") == [
        "ISA|00|          |00|          |ZZ|ACME           |12|8005551234     |260302|2330|!|00501|000000001|1|P|:'",
        "GS|SH|ACME|8005551234|20260302|2330|1|X|005010'",
        "ST|856|0001|005010X220'",
        "BSN|00|SH-1'",
        "HL|1||S'",
        "HL|2||O'",
        "TD5|A::C'",
        "MEA|||10!12.5'",
        "SE|7|0001'",
        "GE|1|1'",
        "IEA|1|000000001'",
        "",
    ]


def test_empty_elements_components_and_segments() -> None:
    m = build("""
        input: json
        output: {format: x12, transaction: "850", sender: {id: A1}, receiver: {id: B2}}
        fields:
          BEG/01: {value: "00"}
          BEG/03: $.id
          BEG/05: $.missing
          BEG/06: {value: ""}
          REF/01: $.missing
          REF/02: $.missing
          PER/01: {value: IC}
          PER/02: {source: $.missing, keep_null: true}
          PER/03: {value: "  "}
          TD5/05/01: {value: X}
          TD5/05/02: $.missing
          MSG/01: {value: hello}
        """)
    body = segments(m.apply(Document('{"id": "P-1"}'), LocalMapContext()).data)[3:-3]
    assert body == ["BEG*00**P-1", "PER*IC**  ", "TD5*****X", "MSG*hello"]
    assert segments(m.apply(Document('{"id": "P-1"}'), LocalMapContext()).data)[-3] == "SE*6*0001"


@pytest.mark.parametrize(("value", "what"), [
    ("A*B", "the element separator '*'"),
    ("A~B", "the segment terminator '~'"),
    ("A>B", "the sub-element separator '>'"),
    ("line\nbreak", "a control character '\\n'"),
])
def test_a_separator_inside_a_value_fails_the_document(value: str, what: str) -> None:
    m = build("""
        map: partner-po
        input: json
        output: {format: x12, transaction: "850", sender: {id: A1}, receiver: {id: B2}}
        fields:
          BEG/03: $.id
          PO1Loop: {foreach: "$.lines[*]", fields: {PO1/01: $.n, PID/05: $.text}}
        """, "partner-po")
    ctx = LocalMapContext()
    with pytest.raises(DocumentError) as exc:
        m.apply(Document(json.dumps({"id": "P", "lines": [{"n": 1, "text": "ok"}, {"n": 2, "text": value}]})), ctx)
    assert str(exc.value) == (f"map 'partner-po': output: transaction set 1, segment 6 (PID), element PID05: value "
                              f"{value!r} contains {what}; X12 has no escape character: change the value (e.g. with "
                              "a replace function) or the separators")
    # the failed document took no control number
    ok = m.apply(Document('{"id": "P", "lines": []}'), ctx)
    assert ok.props["x12_interchange_control_number"] == "000000001"


def test_the_repetition_separator_is_only_forbidden_where_it_is_one() -> None:
    opts = '{format: x12, transaction: "850", sender: {id: A1}, receiver: {id: B2}, version: VERSION}'
    text = '{"id": "A^B"}'
    m4010 = build(f"input: json\noutput: {opts.replace('VERSION', '004010')}\nfields: {{BEG/03: $.id}}")
    assert "BEG***A^B~" in m4010.apply(Document(text), LocalMapContext()).data.decode()
    m5010 = build(f"input: json\noutput: {opts.replace('VERSION', '005010')}\nfields: {{BEG/03: $.id}}")
    with pytest.raises(DocumentError, match=r"element BEG03: value 'A\^B' contains the repetition separator '\^'"):
        m5010.apply(Document(text), LocalMapContext())


def test_envelope_values_from_process_properties() -> None:
    m = build("""
        input: json
        output:
          format: x12
          transaction: "810"
          sender: {qualifier: "{{ process.q }}", id: "{{ process.sender }}"}
          receiver: {id: PARTNER}
          application_sender: "{{ process.sender }}-AP"
          usage: "{{ process.usage }}"
          control_number: "{{ process.icn }}"
        fields:
          BIG/02: $.n
        """)
    ctx = LocalMapContext(properties={"q": "01", "sender": "987654321", "usage": "T", "icn": "4711"})
    segs = segments(m.apply(Document('{"n": "INV-1"}'), ctx).data)
    assert segs[0].split("*")[5:7] == ["01", "987654321      "]
    assert segs[0].split("*")[13:16] == ["000004711", "0", "T"]
    assert segs[1].split("*")[:7] == ["GS", "IN", "987654321-AP", "PARTNER", segs[1].split("*")[4],
                                      segs[1].split("*")[5], "4711"]
    ctx.properties["sender"] = "A-SENDER-ID-THAT-IS-TOO-LONG"
    with pytest.raises(DocumentError, match="sender id 'A-SENDER-ID-THAT-IS-TOO-LONG' must be 1 to 15 characters"):
        m.apply(Document('{"n": "INV-1"}'), ctx)
    ctx.properties.update(sender="S", icn="12x")
    with pytest.raises(DocumentError, match="control number '12x' is not a number from 1 to 999999999"):
        m.apply(Document('{"n": "INV-1"}'), ctx)


def test_one_transaction_set_per_record() -> None:
    m = build("""
        input: json
        output: {format: x12, transaction: "850", sender: {id: A1}, receiver: {id: B2}}
        foreach: $.orders[*]
        fields:
          BEG/03: $.id
          PO1: {foreach: "$.lines[*]", fields: {"01": $}}
        """)
    segs = segments(m.apply(Document('{"orders": [{"id": "X", "lines": [1, 2]}, {"id": "Y", "lines": [3]}]}'),
                            LocalMapContext()).data)
    assert segs[2:] == ["ST*850*0001", "BEG***X", "PO1*1", "PO1*2", "SE*5*0001", "ST*850*0002", "BEG***Y",
                        "PO1*3", "SE*4*0002", "GE*2*1", "IEA*1*000000001"]
    with pytest.raises(DocumentError, match="there is no transaction set to write"):
        m.apply(Document('{"orders": []}'), LocalMapContext())


# --------------------------------------------------------------------------------------------- control numbers


def test_control_numbers_per_partner_pair_and_range(tmp_path: Path) -> None:
    def m(receiver: str, extra: str = "") -> CompiledMap:
        return build(f'input: json\noutput: {{format: x12, transaction: "850", sender: {{id: A1}}, '
                     f'receiver: {{id: {receiver}}}{extra}}}\nfields: {{BEG/03: $.id}}')

    def icn(cm: CompiledMap, ctx: LocalMapContext) -> str:
        return cm.apply(Document('{"id": "1"}'), ctx).props["x12_interchange_control_number"]

    ctx = LocalMapContext(data_dir=tmp_path)
    assert [icn(m("B1"), ctx) for _ in range(3)] == ["000000001", "000000002", "000000003"]
    assert icn(m("B2"), ctx) == "000000001"  # its own sequence
    wrap = m("B3", ", control_range: [998, 999]")
    assert [icn(wrap, ctx) for _ in range(3)] == ["000000998", "000000999", "000000998"]
    assert (tmp_path / "x12-control-numbers.db").exists()
    # another context on the same data directory goes on where the first stopped
    close_counters()
    assert icn(m("B1"), LocalMapContext(data_dir=tmp_path)) == "000000004"
    # an explicit counter file
    own = m("B1", f", control_file: {tmp_path / 'own' / 'counter.db'}")
    assert icn(own, ctx) == "000000001"
    # without a data directory: in memory, per context
    assert [icn(m("B1"), LocalMapContext()) for _ in range(2)] == ["000000001", "000000001"]


TAKE = """
import sys
from atom.maps import LocalMapContext
from atom.maps._x12 import next_control_number
ctx = LocalMapContext(data_dir=sys.argv[1])
print(" ".join(str(next_control_number(ctx, None, "ZZ:ACME", "ZZ:PARTNER", (1, 999999999), "t")) for _ in range(40)))
"""


def test_processes_sharing_a_data_directory_never_get_the_same_number(tmp_path: Path) -> None:
    """As the worker processes of one Atom do: every number is given out once."""
    procs = [subprocess.Popen([sys.executable, "-c", TAKE, str(tmp_path)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, cwd=Path(__file__).resolve().parents[1]) for _ in range(3)]
    outs = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=30)
            assert p.returncode == 0, err.decode()
            outs.append([int(n) for n in out.split()])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=10)
    assert all(o == sorted(o) for o in outs)  # increasing in each process
    assert sorted(n for o in outs for n in o) == list(range(1, 121))


PROCESS = """
process: send-po
shapes:
  - {id: edi, map: to-850}
  - {id: done, return: {}}
"""
MAP = """
map: to-850
input: json
output: {format: x12, transaction: "850", sender: {id: ACME}, receiver: {id: PARTNER}}
fields: {BEG/03: $.id}
"""


def test_control_numbers_survive_a_restart_of_the_engine(tmp_path: Path) -> None:
    comp = tmp_path / "processes"
    comp.mkdir()
    (comp / "send-po.yaml").write_text(PROCESS)
    (comp / "to-850.yaml").write_text(MAP)
    dep = load_directory(comp)
    data = tmp_path / "data"

    async def serve(n: int, execution_type: str = "exec_listener") -> list[str]:
        store = SqliteStore(data / "atom.db")
        await store.open()
        engine = Engine(dep, recorder=store)
        try:
            out = []
            for _ in range(n):
                ex = await engine.execute("send-po", [Document('{"id": "PO-1"}')], execution_type=execution_type)
                assert ex.status == "COMPLETE", ex.message
                out.append(ex.returned[0].props["x12_interchange_control_number"])
            return out
        finally:
            await engine.stop()
            await store.close()

    assert asyncio.run(serve(2)) == ["000000001", "000000002"]
    close_counters()  # as a new process would
    assert asyncio.run(serve(2)) == ["000000003", "000000004"]
    assert (data / "x12-control-numbers.db").exists()
    # process tests count in memory, from 1, and leave the Atom's counter alone
    assert asyncio.run(serve(2, "test_manual")) == ["000000001", "000000002"]
    assert asyncio.run(serve(1)) == ["000000005"]


# --------------------------------------------------------------------------------------------- reading


TO_JSON = """
input: x12
output: json
fields:
  sender: /Interchange/ISA/ISA06
  usage: /Interchange/ISA/ISA15
  group: /Interchange/FunctionalGroup/GS/GS06
  po: BEG/BEG03
  date: {source: BEG/BEG05, function: {date_format: {from: yyyyMMdd, to: yyyy-MM-dd}}}
  vendor: N1Loop[N1/N101='VN']/N1/N104
  ship_city: N1Loop[N1/N101='ST']/N4/N401
  lines:
    foreach: PO1Loop
    fields:
      line: PO1/PO101
      qty: {source: PO1/PO102, type: number}
      price: {source: PO1/PO104, type: number}
      buyer_part: PO1[PO106='BP']/PO107
      vendor_part: PO1/PO109
      description: PID/PID05
  lines_count: {source: CTTLoop/CTT/CTT01, type: int}
"""


def test_an_850_reads_back_into_json() -> None:
    edi = map_850("line_ending: crlf").apply(Document(PO_XML), LocalMapContext())
    got = json.loads(build(TO_JSON).apply(edi, LocalMapContext()).data)
    assert got == {
        "sender": "ACMECORP", "usage": "T", "group": "1", "po": "4501", "date": "2026-03-02",
        "vendor": "GLX-0042", "ship_city": "Springfield",
        "lines": [
            {"line": "1", "qty": 40, "price": 8.75, "buyer_part": "GLV-NIT-L", "vendor_part": "GX-55210",
             "description": "Nitrile gloves, size L"},
            {"line": "2", "qty": 12, "price": 4.1, "vendor_part": "GX-31007", "description": "Safety glasses, clear"},
        ],
        "lines_count": 2,
    }


def test_the_tree_composites_repetitions_and_declared_loops() -> None:
    text = ("ISA*00*          *00*          *ZZ*A1             *ZZ*B2             *260302*1714*^*00501*000000007*0*P*:~"
            "GS*XX*A1*B2*20260302*1714*7*X*005010~ST*999*0001~LX*1~N7*AB*1234~L5*1*FURNITURE^CHAIRS~"
            "LX*2~N7*CD*5:6~SE*7*0001~GE*1*7~IEA*1*000000007~")
    root, ctx = parse_interchange(text, None)
    assert root.tag == "Interchange" and root.findtext("ISA/ISA11") == "^"
    assert ctx.tag == "TransactionSet" and [c.tag for c in ctx] == ["ST", "LX", "N7", "L5", "LX", "N7", "SE"]
    assert ctx.xpath("L5/L502/text()") == ["FURNITURE", "CHAIRS"]
    assert ctx.xpath("N7[2]/N702/N70202/text()") == ["6"]
    m = build("""
        input: {format: x12, loops: {LX: [N7, L5]}}
        output: json
        fields:
          items: {foreach: LXLoop, fields: {n: LX/LX01, equipment: N7/N702, what: {source: {foreach: L5/L502}, function: join}}}
        """)
    got = json.loads(m.apply(Document(text), LocalMapContext()).data)
    assert got == {"items": [{"n": "1", "equipment": "1234", "what": "FURNITURE,CHAIRS"}, {"n": "2", "equipment": "56", "what": ""}]}


GOOD = "\n".join(EXPECTED_850) + "\n"


@pytest.mark.parametrize(("edit", "message"), [
    (lambda t: t.replace("SE*13*", "SE*12*"),
     "segment 15 (SE): SE01 says 12 segments, the transaction set has 13 (ST to SE)"),
    (lambda t: t.replace("SE*13*0001", "SE*13*0002"),
     "segment 15 (SE): SE02 '0002' does not match ST02 '0001' (segment 3)"),
    (lambda t: t.replace("GE*1*1", "GE*1*7"), "segment 16 (GE): GE02 '7' does not match GS06 '1' (segment 2)"),
    (lambda t: t.replace("GE*1*1", "GE*3*1"), "segment 16 (GE): GE01 says 3 transaction sets, the group has 1"),
    (lambda t: t.replace("IEA*1*000000001", "IEA*1*000000002"),
     "segment 17 (IEA): IEA02 '000000002' does not match ISA13 '000000001'"),
    (lambda t: t.replace("IEA*1*", "IEA*2*"), "segment 17 (IEA): IEA01 says 2 functional groups, the interchange has 1"),
    (lambda t: t[:t.index("IEA")], "the interchange is truncated: no IEA segment (the last segment is 16 (GE))"),
    (lambda t: t[:t.index("SE*")],
     "the interchange is truncated: transaction set 0001 (segment 3) has no SE segment (the last segment is 14 (CTT))"),
    (lambda t: t.replace("N4*", "n4*"), "segment 9: 'n4' is not a segment ID (2 or 3 capital letters and digits)"),
    (lambda t: t.replace("SE*13*", "SE*99999999999999999999*"),
     "segment 15 (SE): SE01 (number of included segments) '99999999999999999999' is not a number (1 to 10 digits)"),
    (lambda t: t.replace("SE*13*", "SE*4294967297*"),
     "segment 15 (SE): SE01 says 4294967297 segments, the transaction set has 13 (ST to SE)"),
    (lambda t: t.replace("*000000001*0*T", "*00000001*0*T"),
     "segment 1 (ISA): ISA13 (interchange control number) '00000001' is not 9 digits"),
    (lambda t: t + "ST*850*0002~", "segment 18 (ST) comes after IEA: one interchange per document"),
    (lambda t: t.replace("ST*850*0001", "ST*850*01"),
     "segment 3 (ST): ST02 (transaction set control number) '01' must be 4 to 9 characters"),
    (lambda t: t.replace("GE*1*1~", ""),
     "segment 16 (IEA) is outside a transaction set (expected ST or GE)"),
    (lambda t: t.replace("SE*13*0001~", ""),
     "segment 15 (GE): transaction set 0001 (segment 3) has no SE segment before it"),
    (lambda t: "<order-header/>", "it does not start with an ISA segment (it starts with '<order-header/>')"),
    (lambda t: t[:80], "the ISA segment is truncated (an interchange starts with a 106-character ISA segment)"),
    (lambda t: "ISA" + "A" * 200, "segment 1 (ISA): 'A' cannot be the element separator"),
    (lambda t: t.replace("*>~", "**~", 1),
     "segment 1 (ISA): separators element '*', sub-element '*', terminator '~' are not three different "
     "non-alphanumeric characters"),
    (lambda t: t.replace("CUR*BY*USD", "CUR" + "*X" * 120), "segment 5 (CUR) has 120 elements (at most 99)"),
])
def test_a_broken_interchange_is_refused_naming_the_segment(edit: Any, message: str) -> None:
    m = build(TO_JSON, "inbound-850")
    text = edit(GOOD.replace("\n", "~\n"))
    with pytest.raises(DocumentError) as exc:
        m.apply(Document(text), LocalMapContext())
    assert str(exc.value) == f"map 'inbound-850': document is not a valid X12 interchange: {message}"


def test_a_large_interchange_is_read_in_linear_time() -> None:
    lines = "".join(f"PO1*{i}*1*EA*1**VP*P{i}~PID*F****item {i}~" for i in range(1, 20001))
    n = 40000 + 4
    text = (EXPECTED_850[0] + "~" + EXPECTED_850[1] + "~ST*850*0001~BEG*00*SA*X~" + lines
            + f"CTT*20000~SE*{n}*0001~GE*1*1~IEA*1*000000001~")
    m = build("input: x12\noutput: json\nfields: {n: count(PO1Loop), last: 'PO1Loop[last()]/PID/PID05'}")
    assert json.loads(m.apply(Document(text), LocalMapContext()).data) == {"n": 20000, "last": "item 20000"}


# --------------------------------------------------------------------------------------------- load errors


def test_load_errors_are_located() -> None:
    got = problems("""
        map: bad
        input: json
        output:
          format: x12
          transaction: "850"
          sender: {qualifier: ZZZ, id: ACME}
          receiver: {id: "{{ process.partner "}
          usage: X
          segment_terminator: "*"
          control_range: [9, 2]
        fields:
          BEG/01: $.a
        """, file="maps/bad.yaml")
    assert got == [
        "maps/bad.yaml:7:23: error: sender qualifier 'ZZZ' must be 2 characters long",
        "maps/bad.yaml:8:18: error: invalid template '{{ process.partner ': unexpected end of template, "
        "expected 'end of print statement'.",
        "maps/bad.yaml:9:10: error: usage 'X' is not one of P, T, I",
        "maps/bad.yaml:10:23: error: element_separator and segment_terminator are both '*': the separators must "
        "differ",
        "maps/bad.yaml:11:18: error: expected [first, last] with first <= last, got [9, 2]",
    ]
    got = problems("""
        map: bad
        input: json
        output: {format: x12, transaction: "850", sender: {id: ACME}, receiver: {id: PARTNER}}
        fields:
          BEG: $.x
          ST/01: $.x
          BEGG/01: $.y
          CUR/AB: $.z
          PO1Loop: {foreach: "$.lines[*]", fields: {PO1/01: $.n, PO1/02/01/01: $.q}}
          REF/01: {value: A}
          REF: {foreach: "$.refs[*]", fields: {"01": $.q}}
          N1: {foreach: "$.x[*]"}
        """, file="maps/bad.yaml")
    assert got == [
        "maps/bad.yaml:6:3: error: invalid target 'BEG': 'BEG' is a segment: it takes element fields, not a value "
        "(e.g. BEG/01)",
        "maps/bad.yaml:7:3: error: invalid target 'ST/01': ST is written by the envelope: set it with the output "
        "options (transaction, sender, receiver, version, ...)",
        "maps/bad.yaml:8:3: error: invalid target 'BEGG/01': 'BEGG' is not a segment ID (2 or 3 capital letters and "
        "digits): it is taken for a loop, and '01', an element position, belongs under a segment",
        "maps/bad.yaml:9:3: error: invalid target 'CUR/AB': 'AB' is not an element of segment CUR: write its "
        "position (CUR/03 or 03, or CUR03)",
        "maps/bad.yaml:10:58: error: invalid target 'PO1/02/01/01': '01': a component has no parts",
        "maps/bad.yaml:12:3: error: target 'REF' is mapped twice (name each instance of a segment that occurs "
        "twice: REF#1, REF#2)",
        "maps/bad.yaml:13:3: error: invalid target 'N1': a repeating group without fields gives repeated values: it "
        "must target an element (SEG/NN), not 'N1'",
    ]
    assert problems("input: x12\noutput: json\nfields: {a: $.BEG.BEG03}") == [
        "m.yaml:3:13: error: '$.BEG.BEG03' is a JSONPath but the input is x12: use an XPath such as 'BEG/BEG03', "
        "'N1Loop[N1/N101=\"ST\"]/N1/N102' or '/Interchange/ISA/ISA06'"]
    assert problems("input: json\noutput: x12\nfields: {BEG/01: $.a}") == [
        'm.yaml:2:9: error: x12 output needs its envelope: {format: x12, transaction: "850", sender: {qualifier: '
        'ZZ, id: ...}, receiver: {qualifier: ZZ, id: ...}}']
    assert problems(textwrap.dedent("""\
        input: {format: x12, loops: {PO1: [PID, bad]}}
        output: {format: x12, transaction: "123", sender: {id: A}, receiver: {id: B}}
        fields: {BEG/01: $.a}
        """)) == [
        "m.yaml:1:41: error: 'bad' is not a segment ID (2 or 3 capital letters and digits)",
        "m.yaml:2:36: error: no known functional identifier (GS01) for transaction set '123': give functional_id",
    ]
