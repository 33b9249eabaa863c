"""Cut a run's HTTP connections from another thread, so that blocked reads end at once.

A worker waiting for Mixpanel's first byte (which can take minutes) or for
the next block of a slow body sits in a socket read that only the read
timeout (10 minutes) would end. A stopping run must neither wait for that
nor leave the thread running after it returned: :class:`ConnectionCutter`
knows every connection its sessions opened, and :meth:`ConnectionCutter.cut`
shuts their sockets down. A blocked ``recv`` then returns at once (end of
stream), the request fails, and the worker sees the stop.

Imports requests and urllib3: import this module lazily (``--help`` stays fast).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import weakref
from typing import TYPE_CHECKING, Any

import urllib3.poolmanager
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from mpexport.mixpanel.tls import TrustingAdapter

if TYPE_CHECKING:
    import ssl

    import requests


def _shutdown(connection: Any) -> None:
    """Shut a connection's socket down (both ways); never raises."""
    sock = getattr(connection, "sock", None)
    # urllib3's SSLTransport (TLS inside a TLS proxy tunnel) wraps the socket.
    while sock is not None and not isinstance(sock, socket.socket):
        sock = getattr(sock, "socket", None)
    if sock is None:
        return
    with contextlib.suppress(OSError):
        # The plain socket's shutdown, also for an SSLSocket: SSLSocket.shutdown
        # would drop its SSL object under the thread still reading through it.
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


class ConnectionCutter:
    """The connections of one run's sessions; :meth:`cut` ends every read blocked on them.

    Thread-safe. A connection that finishes connecting after :meth:`cut` is
    shut down at once, so a request that was still connecting fails too.
    Connections still connecting (DNS, TCP and TLS set-up, bounded by the
    connect timeout) cannot be cut.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._connections: weakref.WeakSet[Any] = weakref.WeakSet()
        self._cut = False
        self._pool_classes: dict[str, type[HTTPConnectionPool]] | None = None

    @property
    def is_cut(self) -> bool:
        """True once :meth:`cut` was called."""
        return self._cut

    def register(self, connection: Any) -> None:
        """Track a freshly connected connection (shut at once if the cut came first)."""
        with self._lock:
            self._connections.add(connection)
            cut = self._cut
        if cut:
            _shutdown(connection)

    def cut(self) -> None:
        """Shut down every connection's socket, now and as they connect from now on."""
        with self._lock:
            self._cut = True
            live = list(self._connections)
        for connection in live:
            _shutdown(connection)

    def mount(self, session: requests.Session, context: ssl.SSLContext | None = None) -> None:
        """Make ``session`` open its connections (http and https) through this cutter.

        ``context`` is what its HTTPS connections verify with (None: requests' default).
        """
        adapter = _CuttableAdapter(self, context)
        session.mount("https://", adapter)
        session.mount("http://", adapter)

    def pool_classes(self) -> dict[str, type[HTTPConnectionPool]]:
        """urllib3 pool classes whose connections register here when they connect."""
        with self._lock:
            if self._pool_classes is None:
                self._pool_classes = _pool_classes(self)
            return dict(self._pool_classes)


def _pool_classes(cutter: ConnectionCutter) -> dict[str, type[HTTPConnectionPool]]:
    # Classes per cutter: urllib3 builds connections from a pool's
    # ConnectionCls with fixed arguments, so the class itself carries the cutter.
    class CutHTTPConnection(HTTPConnection):
        def connect(self) -> None:
            super().connect()
            cutter.register(self)

    class CutHTTPSConnection(HTTPSConnection):
        def connect(self) -> None:
            super().connect()
            cutter.register(self)

    class CutHTTPConnectionPool(HTTPConnectionPool):
        ConnectionCls = CutHTTPConnection

    class CutHTTPSConnectionPool(HTTPSConnectionPool):
        ConnectionCls = CutHTTPSConnection

    return {"http": CutHTTPConnectionPool, "https": CutHTTPSConnectionPool}


class _CuttableAdapter(TrustingAdapter):
    """requests' adapter, with pools whose connections a :class:`ConnectionCutter` can cut."""

    def __init__(self, cutter: ConnectionCutter, context: ssl.SSLContext | None = None) -> None:
        # Before super().__init__(), which builds the pool manager.
        self._cutter = cutter
        super().__init__(context)

    def init_poolmanager(
        self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: Any
    ) -> None:
        """requests' pool manager, with the cutter's pool classes."""
        super().init_poolmanager(connections, maxsize, block, **pool_kwargs)
        self.poolmanager.pool_classes_by_scheme = self._cutter.pool_classes()

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        """requests' proxy manager; an HTTP(S) proxy's pools get the cutter's classes too."""
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        # SOCKS proxies bring pool classes of their own: those are left alone.
        if manager.pool_classes_by_scheme is urllib3.poolmanager.pool_classes_by_scheme:
            manager.pool_classes_by_scheme = self._cutter.pool_classes()
        return manager
