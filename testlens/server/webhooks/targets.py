"""Which hosts webhooks may be sent to: public addresses only, unless allowed by the operator.

A webhook URL is chosen by a tenant, and the server sends to it from inside its own network.
Without a check, ``http://169.254.169.254/`` (cloud metadata), ``http://127.1:5432`` or a name
that resolves to a private address turns deliveries, and the attempt log that reports their
outcome, into a scanner of that network. So a target is checked when it is registered and
again at every delivery (a name can be re-pointed in between), every address the name
resolves to must be public, and the delivery connects to the address that was checked,
never resolving the name a second time. Operators whose receivers live on a private network
allow those networks explicitly (``TESTLENS_WEBHOOK_ALLOWED_NETWORKS``).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import httpx

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], list[str]]


class RefusedTarget(ValueError):
    """The URL's host is not a public address."""


class Unresolvable(RefusedTarget):
    """The URL's host does not resolve (now): nothing to connect to, and nothing to judge."""


@dataclass(frozen=True, slots=True)
class Target:
    """A checked destination: the URL to request (its host replaced by the checked address),
    and the original host for the ``Host`` header and TLS server name."""

    url: httpx.URL
    host: str


def resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (IPv4 and IPv6)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise Unresolvable(f"{host} does not resolve") from exc
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def parse_networks(text: str) -> tuple[Network, ...]:
    """``10.0.0.0/8, fd00::/8`` as networks; ValueError for anything else."""
    return tuple(ipaddress.ip_network(part.strip()) for part in text.split(",") if part.strip())


def _public(address: Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return _public(address.ipv4_mapped)  # ::ffff:127.0.0.1 is loopback
    return address.is_global and not address.is_multicast


def check(url: str, allowed: Sequence[Network] = (), resolver: Resolver = resolve) -> Target:
    """The checked target of ``url``, or :class:`RefusedTarget` saying why not.

    Every address the host resolves to must be public or inside ``allowed``: a name that
    resolves to one public and one private address is refused, since the connection could
    take either. Numeric hosts in any spelling (``127.1``, ``0x7f.1``, ``2130706433``) are
    resolved by the system like names, so they are judged by the address they mean.
    """
    parsed = httpx.URL(url)
    host = parsed.host
    if parsed.scheme not in ("http", "https") or not host:
        raise RefusedTarget("only http:// and https:// URLs with a host")
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    addresses = [ipaddress.ip_address(a.split("%", 1)[0]) for a in resolver(host, port)]
    if not addresses:
        raise Unresolvable(f"{host} does not resolve")
    for address in addresses:
        if not (_public(address) or any(address in network for network in allowed)):
            raise RefusedTarget(f"{host} is not a public address")
    chosen = str(addresses[0])
    return Target(parsed.copy_with(host=chosen), host)
