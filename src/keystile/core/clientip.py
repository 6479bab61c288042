"""Who the client is: forwarded addresses are believed only from trusted proxies."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from functools import lru_cache

from keystile.core.model import KeyRecord

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

DEFAULT_TRUSTED = ("127.0.0.0/8", "::1/128")


def parse_networks(items: Iterable[str]) -> tuple[IPNetwork, ...]:
    """CIDRs (or single addresses); raises ValueError naming the bad one."""
    networks = []
    for item in items:
        text = item.strip()
        if not text:
            continue
        try:
            networks.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            raise ValueError(f"{text!r} is not an IP address or CIDR") from None
    return tuple(networks)


def parse_address(text: str | None) -> IPAddress | None:
    if not text:
        return None
    try:
        address = ipaddress.ip_address(text.strip().strip("[]"))
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped
    return address


class TrustedProxies:
    """Decides the client address from the peer and the forwarding headers."""

    def __init__(self, networks: Iterable[IPNetwork]) -> None:
        self.networks = tuple(networks)
        # proxies send the same few peers and forwarding chains again and again
        self.trusts = lru_cache(maxsize=4096)(self._trusts)
        self.client_ip = lru_cache(maxsize=4096)(self._client_ip)

    def _trusts(self, address: str | None) -> bool:
        parsed = parse_address(address)
        return parsed is not None and any(parsed in network for network in self.networks)

    def _client_ip(self, peer: str | None, forwarded_for: str | None) -> str | None:
        """Walk X-Forwarded-For right to left while the hop is a trusted proxy.

        The first untrusted hop is the client; entries left of it are whatever the
        client wrote and are never believed.
        """
        if not self.trusts(peer) or not forwarded_for:
            return str(parse_address(peer) or peer) if peer else None
        hops = [hop.strip() for hop in forwarded_for.split(",")]
        for hop in reversed(hops):
            address = parse_address(hop)
            if address is None:
                return None  # garbage in the chain: unknown client
            if not self.trusts(str(address)):
                return str(address)
        return str(parse_address(hops[0]))


@lru_cache(maxsize=4096)
def _networks(cidrs: tuple[str, ...]) -> tuple[IPNetwork, ...]:
    return parse_networks(cidrs)


@lru_cache(maxsize=65536)
def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    return parse_address(text)


def ip_allowed(record: KeyRecord, client_ip: str | None) -> bool:
    """The key's and its team's allowlists both admit ``client_ip`` (None: unknown)."""
    team = record.team
    if record.allowed_ips is None and (team is None or team.allowed_ips is None):
        return True
    for cidrs in (record.allowed_ips, team.allowed_ips if team else None):
        if cidrs is None:
            continue
        address = _address(client_ip) if client_ip else None
        if address is None or not any(address in net for net in _networks(cidrs)):
            return False
    return True
