"""The client's address behind the shop's TLS proxy (``http.trusted_proxies``).

Behind a reverse proxy every request comes from the proxy's address, so a limit per
address (failed logins, live streams) would be one limit for the whole shop, and
``http.kiosk_networks`` could not tell the wall screen from a phone.  The proxy names
the client in ``X-Forwarded-For``, but any client may send that header too, so it is
believed only when the request comes from an address in ``http.trusted_proxies``.  It
is read from the right: each proxy appends the address it got the request from, so the
rightmost address that is not a trusted proxy is the client, and whatever the client
wrote to the left of it is ignored.

>>> trusted = networks(["127.0.0.1", "10.0.9.0/24"])
>>> client_address("127.0.0.1", "6.6.6.6, 192.168.1.20", trusted)
'192.168.1.20'
>>> client_address("192.168.1.30", "127.0.0.1", trusted)   # not from a proxy: not believed
'192.168.1.30'
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable
from typing import Any

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def networks(texts: Iterable[str]) -> tuple[Network, ...]:
    """Addresses or CIDRs (as ``http.kiosk_networks`` and ``http.trusted_proxies``)."""
    return tuple(ipaddress.ip_network(t, strict=False) for t in texts)


def _address(text: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address((text or "").strip())
    except ValueError:
        return None


def within(address: str | None, nets: Iterable[Network]) -> bool:
    """Whether ``address`` is one of ``nets`` (a malformed address is in none)."""
    addr = _address(address)
    return addr is not None and any(addr in net for net in nets)


def client_address(peer: str, forwarded_for: str | None, trusted: Iterable[Network]) -> str:
    """The client's address: ``peer`` (the TCP peer), or the one its trusted proxies name."""
    trusted = tuple(trusted)
    client = peer
    for hop in reversed((forwarded_for or "").split(",")):
        if not within(client, trusted):
            break  # whoever handed us this is not a proxy of ours: the rest is hearsay
        named = _address(hop)
        if named is None:
            break  # not an address: a proxy of ours would not write that
        client = str(named)
    return client


class ClientAddress:
    """WSGI middleware: ``REMOTE_ADDR`` becomes the client's address as the trusted
    proxies name it; the peer's own address stays in ``peershop.peer``."""

    def __init__(self, app: Callable[..., Any], trusted: Iterable[Network]):
        self.app = app
        self.trusted = tuple(trusted)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        peer = environ.get("REMOTE_ADDR", "")
        environ["peershop.peer"] = peer
        if self.trusted:
            environ["REMOTE_ADDR"] = client_address(
                peer, environ.get("HTTP_X_FORWARDED_FOR"), self.trusted
            )
        return self.app(environ, start_response)
