"""The address a client is counted against, behind the reverse proxies we were told of.

One rule for the account throttles (a Django request) and the web process's per-client share
(an ASGI scope, before Django sees the request).
"""

from __future__ import annotations

import ipaddress

from django.conf import settings

UNKNOWN_IP = "0.0.0.0"  # noqa: S104  (a bucket for requests without an address, never bound to)


def client_address(remote: str, forwarded_for: str) -> str:
    """`remote` (the peer, REMOTE_ADDR), unless TRUSTED_PROXY_COUNT says that many reverse proxies
    stand in front and each appends the address it saw to X-Forwarded-For: then the N-th entry
    from the right, the one our outermost proxy wrote. Entries further left are whatever the client
    sent, so they are never trusted (uvicorn already does the same for a proxy on 127.0.0.1,
    FORWARDED_ALLOW_IPS)."""
    proxies: int = settings.TRUSTED_PROXY_COUNT
    if proxies > 0:
        hops = [h.strip() for h in forwarded_for.split(",") if h.strip()]
        # Fewer entries than proxies: the request skipped a proxy; the leftmost is the farthest known.
        candidate = hops[-proxies] if len(hops) >= proxies else (hops[0] if hops else remote)
        if _is_ip(candidate):
            return candidate
    return remote if _is_ip(remote) else UNKNOWN_IP


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True
