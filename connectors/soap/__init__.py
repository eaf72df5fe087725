"""The `soap` connector: SOAP 1.1 / 1.2 web services described by a WSDL (see docs/connectors/soap.md)."""

from __future__ import annotations

from .connector import SoapConnector

__all__ = ["SoapConnector"]
