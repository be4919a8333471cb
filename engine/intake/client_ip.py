"""Who sent a lead: the client's address, believing ``X-Forwarded-For`` only from proxies
the operator trusts (``LEADFLOW_TRUSTED_PROXIES``).

Anyone can write an ``X-Forwarded-For`` header, so it says who the client was only
where the hop that added it is a proxy of ours: the address is read from the right
(the hop nearest us) and the first address that is not a trusted proxy is the client.
With no trusted proxies (the default) the header is ignored and the client is the
connection's peer.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def trusted_networks(entries: Sequence[str]) -> tuple[Network, ...]:
    """Addresses or CIDR ranges (``10.0.0.0/8``, ``::1``); ValueError for one that is not."""
    return tuple(ipaddress.ip_network(entry.strip(), strict=False) for entry in entries)


def _trusted(address: str, networks: Sequence[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False  # not an address (a name, "unknown"): never one of our proxies
    return any(ip in network for network in networks)


def client_address(
    peer: str | None, forwarded_for: str | None, trusted: Sequence[Network]
) -> str | None:
    """The client's address: ``peer`` unless it is a trusted proxy, then the nearest
    address in ``forwarded_for`` that is not one (the farthest if all are)."""
    if peer is None or not forwarded_for or not _trusted(peer, trusted):
        return peer
    hops = [hop.strip() for hop in forwarded_for.split(",") if hop.strip()]
    for hop in reversed(hops):
        if not _trusted(hop, trusted):
            return hop
    return hops[0] if hops else peer
