"""Which certificates a session trusts: the operating system's store, unless a bundle is named.

A company that inspects HTTPS installs its proxy's root certificate in the
system's store (the Windows certificate store, the macOS keychain, the
distribution's CA files on Linux); requests on its own trusts only certifi's
bundle, which cannot hold it. :func:`system_trust_context` is an SSLContext
from ``truststore`` that verifies with the system's store, and
:class:`TrustingAdapter` hands it to every connection of one session, so the
``ssl`` module of a library caller's process is left as it was (no
``truststore.inject_into_ssl()``).

certifi's bundle is trusted as well, as pip does: a machine whose system store
is missing or stale (a minimal container) keeps working as before. A bundle
named by ``SSL_CERT_FILE``, ``REQUESTS_CA_BUNDLE`` or ``CURL_CA_BUNDLE``
replaces both (see :func:`mpexport.mixpanel.transport.new_session`).

Imports requests: import this module lazily (``--help`` stays fast).
"""

from __future__ import annotations

import ssl
from typing import Any

from requests.adapters import HTTPAdapter


def system_trust_context() -> ssl.SSLContext:
    """A client context that verifies servers with the system's store and certifi's bundle."""
    import truststore
    from requests.utils import DEFAULT_CA_BUNDLE_PATH

    context = truststore.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    # Loaded once here rather than by urllib3 on every new connection (see
    # TrustingAdapter.cert_verify).
    context.load_verify_locations(cafile=DEFAULT_CA_BUNDLE_PATH)
    return context


class TrustingAdapter(HTTPAdapter):
    """requests' adapter whose connections (direct or through a proxy) verify with ``context``.

    With ``context`` None it is requests' own adapter.
    """

    def __init__(self, context: ssl.SSLContext | None = None) -> None:
        # Before super().__init__(), which builds the pool manager.
        self._ssl_context = context
        super().__init__()

    def init_poolmanager(
        self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: Any
    ) -> None:
        """requests' pool manager, its HTTPS pools verifying with the context."""
        if self._ssl_context is not None:
            pool_kwargs["ssl_context"] = self._ssl_context
        super().init_poolmanager(connections, maxsize, block, **pool_kwargs)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        """requests' proxy manager; HTTPS through the proxy's tunnel verifies with the context."""
        if self._ssl_context is not None:
            proxy_kwargs.setdefault("ssl_context", self._ssl_context)
        return super().proxy_manager_for(proxy, **proxy_kwargs)

    def cert_verify(self, conn: Any, url: str, verify: Any, cert: Any) -> None:
        """requests' choice of certificates, except that ``verify=True`` means the context.

        requests would point every connection at certifi's file, which urllib3
        then loads into the shared context on each connect; the context
        already holds it.
        """
        # The stubs leave cert_verify untyped; requests' own is typed like this one.
        super().cert_verify(conn, url, verify, cert)  # type: ignore[no-untyped-call]
        if self._ssl_context is not None and verify is True:
            conn.ca_certs = None
            conn.ca_cert_dir = None
