"""Loading a WSDL with zeep and choosing the service port the connector calls.

`load()` blocks (zeep reads the WSDL and its imports synchronously through `requests`): the connector
runs it in a worker thread from `start()`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import requests
import zeep
from zeep.wsdl.bindings.soap import Soap11Binding, Soap12Binding, SoapBinding

from atom.errors import ERROR, TIMEOUT, UNREACHABLE, ConnectorError, status_kind


@dataclass(frozen=True)
class Target:
    """The loaded WSDL and the SOAP port the connection calls."""

    client: zeep.Client
    binding: SoapBinding
    version: str  # "1.1" | "1.2"
    address: str
    service: str
    port: str

    def operation_names(self) -> list[str]:
        return sorted(self.binding.all())


def safe_url(url: str) -> str:
    """`url` without user and password, for messages."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


def load(name: str, config: Mapping[str, Any]) -> Target:
    """Load the WSDL of connection `name` and pick its port; raise ConnectorError saying what is wrong."""
    wsdl = config["wsdl"]
    where = f"connection '{name}': WSDL '{safe_url(wsdl)}'"
    session = requests.Session()
    session.verify = bool(config.get("verify_tls", True))
    auth = config.get("auth")
    if auth:
        session.auth = (auth["username"], auth["password"])
    session.headers.update(config.get("headers") or {})
    transport = zeep.Transport(session=session,
                               timeout=(config.get("connect_timeout", 10.0), config.get("timeout", 30.0)))
    settings = zeep.Settings(strict=True, forbid_dtd=True, forbid_entities=True, xml_huge_tree=False)
    try:
        client = zeep.Client(wsdl, transport=transport, settings=settings)
    except requests.HTTPError as exc:
        status = exc.response.status_code if exc.response is not None else None
        raise ConnectorError(f"{where}: cannot be loaded: HTTP {status}", status=status,
                             retryable=bool(status and status >= 500),
                             kind=status_kind(status) if status else ERROR) from None
    except (requests.RequestException, OSError) as exc:
        kind = TIMEOUT if isinstance(exc, (requests.Timeout, TimeoutError)) else UNREACHABLE
        raise ConnectorError(f"{where}: cannot be loaded: {exc}", retryable=True, kind=kind) from None
    except Exception as exc:  # zeep and lxml raise many types for a broken WSDL
        raise ConnectorError(f"{where}: is not a usable WSDL: {type(exc).__name__}: {exc}") from None
    finally:
        session.close()
    return _select(where, client, config)


def _select(where: str, client: zeep.Client, config: Mapping[str, Any]) -> Target:
    services = client.wsdl.services
    want_service, want_port = config.get("service"), config.get("port")
    address = config.get("address")
    if not services:
        return _without_service(where, client, address)
    if want_service:
        if want_service not in services:
            raise ConnectorError(f"{where}: has no service '{want_service}' "
                                 f"(services: {', '.join(services) or 'none'})")
        candidates = [services[want_service]]
    else:
        candidates = list(services.values())
    for service in candidates:
        ports = service.ports
        if want_port:
            if want_port not in ports:
                if want_service or len(candidates) == 1:
                    raise ConnectorError(f"{where}: service '{service.name}' has no port '{want_port}' "
                                         f"(ports: {', '.join(ports) or 'none'})")
                continue
            port = ports[want_port]
            if not isinstance(port.binding, SoapBinding):
                raise ConnectorError(f"{where}: port '{want_port}' is not a SOAP port "
                                     f"({type(port.binding).__name__})")
        else:
            port = next((p for p in ports.values() if isinstance(p.binding, SoapBinding)), None)
            if port is None:
                continue
        target_address = address or port.binding_options.get("address")
        if not target_address:
            raise ConnectorError(f"{where}: port '{port.name}' has no address; set 'address' on the connection")
        return Target(client, port.binding, _version(port.binding), target_address, service.name, port.name)
    if want_port:
        raise ConnectorError(f"{where}: no service has a port '{want_port}'")
    raise ConnectorError(f"{where}: has no SOAP 1.1 or SOAP 1.2 port")


def _without_service(where: str, client: zeep.Client, address: str | None) -> Target:
    bindings = [b for b in client.wsdl.bindings.values() if isinstance(b, SoapBinding)]
    if not bindings:
        raise ConnectorError(f"{where}: has no SOAP binding (is it a WSDL 1.1 document?)")
    if not address:
        raise ConnectorError(f"{where}: declares no service; set 'address' on the connection")
    binding = bindings[0]
    return Target(client, binding, _version(binding), address, "", "")


def _version(binding: SoapBinding) -> str:
    if isinstance(binding, Soap12Binding):
        return "1.2"
    if isinstance(binding, Soap11Binding):
        return "1.1"
    return "1.1"
