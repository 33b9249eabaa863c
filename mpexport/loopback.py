"""Which hosts plain HTTP may reach: loopback only, never the network.

One rule for the hosts the user can point mpexport at: Mixpanel's API
(``--api-url``, the built-in server) and an object store's endpoint
(a local MinIO). Credentials only ever cross the network over HTTPS.
"""

from __future__ import annotations

import ipaddress


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
