"""End to end: the Coupa purchase order -> X12 850 -> FTP example (examples/coupa-to-edi) served by
`atom serve` as a subprocess, pointed by environment variables at a pyftpdlib server on 127.0.0.1,
driven over HTTP the way Coupa posts its orders. The files that arrive are read back with the x12
input side, which checks their envelope."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from atom.maps._x12 import parse_interchange
from tests.connectors.test_ftp import Server
from tests.e2e.conftest import AtomServer, Response

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "coupa-to-edi"
SAMPLE = (EXAMPLE / "sample-po.xml").read_bytes()
PATH = "/ws/rest/coupa/purchase-orders"
HEADERS = {"Content-Type": "application/xml"}
PASSWORD = "partner-Pa55"


class PartnerFtp(Server):
    """The trading partner's FTP server (pyftpdlib in a thread), user acme."""

    def __init__(self, home: Path) -> None:
        super().__init__(home, user="acme", password=PASSWORD)

    def files(self) -> list[str]:
        return sorted(str(p.relative_to(self.home)) for p in self.home.rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def partner(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PartnerFtp]:
    home = tmp_path_factory.mktemp("partner-ftp")
    srv = PartnerFtp(home)
    try:
        yield srv
    finally:
        srv.stop()


def atom_env(partner: PartnerFtp) -> dict[str, str]:
    return {"PARTNER_FTP_HOST": "127.0.0.1", "PARTNER_FTP_PORT": str(partner.port), "PARTNER_FTP_USER": "acme",
            "PARTNER_FTP_PASSWORD": PASSWORD, "EDI_SENDER_ID": "ACMECORP", "EDI_RECEIVER_QUALIFIER": "01",
            "EDI_RECEIVER_ID": "123456789", "EDI_USAGE": "P"}


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("coupa")


@pytest.fixture(scope="module")
def atom(work: Path, partner: PartnerFtp) -> Iterator[AtomServer]:
    srv = AtomServer(work, EXAMPLE, atom_env(partner))
    try:
        yield srv.start()
    finally:
        if srv.proc is not None:
            srv.terminate()


def post(srv: AtomServer, body: bytes) -> Response:
    return srv.request("POST", PATH, body, HEADERS)


def po(number: str) -> bytes:
    return SAMPLE.replace(b"<po-number>4501</po-number>", f"<po-number>{number}</po-number>".encode())


def check_850(partner: PartnerFtp, name: str, po_number: str, icn: str) -> None:
    """The file is a valid interchange (envelope counts and control numbers checked by the reader)
    holding the 850 of the order."""
    text = (partner.home / "inbound" / name).read_text(encoding="utf-8")
    root, ts = parse_interchange(text, None)
    assert root.findtext("ISA/ISA06") == "ACMECORP" and root.findtext("ISA/ISA08") == "123456789"
    assert root.findtext("ISA/ISA07") == "01" and root.findtext("ISA/ISA15") == "P"
    assert root.findtext("ISA/ISA13") == icn and root.findtext("IEA/IEA02") == icn
    assert root.findtext("FunctionalGroup/GS/GS06") == str(int(icn))
    assert ts.findtext("ST/ST01") == "850" and ts.findtext("SE/SE01") == "19"
    assert ts.findtext("BEG/BEG03") == po_number
    assert [(p.findtext("PO1/PO101"), p.findtext("PO1/PO102"), p.findtext("PO1/PO109"))
            for p in ts.findall("PO1Loop")] == [("1", "40", "GX-55210"), ("2", "12", "GX-31007"), ("3", "6", "GX-70118")]
    assert ts.xpath("string(N1Loop[N1/N101='ST']/N4/N401)") == "Springfield"
    assert text.splitlines()[3] == f"BEG*00*SA*{po_number}**20260302~"


def test_purchase_orders_arrive_as_850s_with_consecutive_control_numbers(atom: AtomServer,
                                                                        partner: PartnerFtp) -> None:
    r = post(atom, SAMPLE)
    assert r.status == 200, r.body
    assert r.header("Content-Type") == "application/json"
    assert r.json() == {"status": "sent", "poNumber": "4501", "transactionSet": "850",
                        "file": "PO4501_000000001.x12", "directory": "inbound",
                        "interchangeControlNumber": "000000001"}
    assert partner.files() == ["inbound/PO4501_000000001.x12"]
    check_850(partner, "PO4501_000000001.x12", "4501", "000000001")

    r = post(atom, po("4502"))
    assert r.status == 200, r.body
    assert r.json()["file"] == "PO4502_000000002.x12" and r.json()["interchangeControlNumber"] == "000000002"
    check_850(partner, "PO4502_000000002.x12", "4502", "000000002")
    assert partner.files() == ["inbound/PO4501_000000001.x12", "inbound/PO4502_000000002.x12"]


def test_malformed_purchase_orders_are_refused_and_send_nothing(atom: AtomServer, partner: PartnerFtp) -> None:
    before = partner.files()
    r = post(atom, SAMPLE.replace(b"</po-number>", b"</po-numbr>"))
    assert r.status == 400, r.body
    assert r.json()["error"]["code"] == "INVALID_INPUT"
    assert "Opening and ending tag mismatch: po-number" in r.json()["error"]["message"]

    r = post(atom, SAMPLE.replace(b"<po-number>4501</po-number>", b""))
    assert r.status == 422, r.body
    assert r.json() == {"error": {"code": "INVALID_PURCHASE_ORDER", "poNumber": "", "message": (
        "map 'to-850' (coupa-po-to-850): map 'coupa-po-to-850': field 'BEG/03': required value is missing "
        "(source 'po-number')")}}
    assert partner.files() == before


def test_control_numbers_go_on_after_a_restart(work: Path, partner: PartnerFtp, atom: AtomServer) -> None:
    """Runs last: it stops the module's Atom."""
    r = post(atom, po("4601"))
    assert r.status == 200, r.body
    last = int(r.json()["interchangeControlNumber"])
    atom.terminate()
    again = AtomServer(work, EXAMPLE, atom_env(partner))  # the same data directory
    try:
        again.start()
        r = post(again, po("4602"))
        assert r.status == 200, r.body
        icn = f"{last + 1:09d}"
        assert r.json()["file"] == f"PO4602_{icn}.x12"
        check_850(partner, f"PO4602_{icn}.x12", "4602", icn)
        assert (work / "data" / "x12-control-numbers.db").exists()
    finally:
        if again.proc is not None:
            again.terminate()

