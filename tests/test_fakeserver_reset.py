"""The built-in server's RST faults close the socket object itself, on any platform.

``os.close(sock.detach())`` only works where a socket is a file descriptor: on
Windows it is a handle, ``os.close`` fails on it and the socket leaked. These
tests emulate that on Linux (``os.close`` refuses sockets, ``sys.platform`` is
``"win32"``) and check that a reset still reaches the client, releases the
socket and leaves the server's own clean-up nothing to trip over.
"""

from __future__ import annotations

import base64
import errno
import os
import socket
import stat
import struct
import sys
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from types import SimpleNamespace
from typing import Any, cast

import pytest

from mpexport.fakeserver import (
    DEMO_PROJECT_ID,
    DEMO_SECRET,
    DEMO_USERNAME,
    Dataset,
    FakeMixpanelServer,
    body,
    server,
    wire,
)
from mpexport.fakeserver.config import CUT_FAULT_KINDS
from tests.helpers import PATIENCE, ServerFactory

# Every fault that ends in abort_connection: the 200 body's and the cut responses'.
RESET_KINDS = ("reset", *CUT_FAULT_KINDS)


@dataclass
class Aborted:
    """The server-side socket as abort_connection received it, before the abort."""

    sock: socket.socket
    fd: int
    inode: tuple[int, int]


def _inode(fd: int) -> tuple[int, int] | None:
    try:
        info = os.fstat(fd)
    except OSError:
        return None
    return info.st_dev, info.st_ino


@pytest.fixture
def os_close_refuses_sockets(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """``os.close`` fails on a socket, as on Windows; returns the refused descriptors."""
    real_close = os.close
    refused: list[int] = []

    def close(fd: int) -> None:
        try:
            is_socket = stat.S_ISSOCK(os.fstat(fd).st_mode)
        except OSError:
            is_socket = False
        if is_socket:
            refused.append(fd)
            raise OSError(errno.EBADF, "a socket handle is not a file descriptor")
        real_close(fd)

    monkeypatch.setattr(os, "close", close)
    return refused


@pytest.fixture
def aborted(monkeypatch: pytest.MonkeyPatch) -> list[Aborted]:
    """Record each connection that abort_connection drops (both of its call sites)."""
    seen: list[Aborted] = []
    real_abort = wire.abort_connection

    def spy(handler: BaseHTTPRequestHandler, rst: bool) -> None:
        fd = handler.connection.fileno()
        inode = _inode(fd)
        assert inode is not None
        seen.append(Aborted(handler.connection, fd, inode))
        real_abort(handler, rst)

    monkeypatch.setattr(wire, "abort_connection", spy)
    monkeypatch.setattr(body, "abort_connection", spy)
    return seen


@dataclass
class Cleanup:
    """What the server framework did after the handler returned."""

    done: threading.Event
    errors: list[BaseException | None]
    shutdown_of_closed: list[socket.socket]


@pytest.fixture
def cleanup(monkeypatch: pytest.MonkeyPatch) -> Cleanup:
    """Spy on the server's per-connection clean-up, which runs after the client's reset."""
    seen = Cleanup(threading.Event(), [], [])
    real_shutdown_request = server._HTTPServer.shutdown_request
    real_handle_error = server._HTTPServer.handle_error
    real_sock_shutdown = socket.socket.shutdown

    def shutdown_request(self: server._HTTPServer, request: Any) -> None:
        try:
            real_shutdown_request(self, request)
        finally:
            # The framework's last step for a connection (after any handle_error).
            seen.done.set()

    def handle_error(self: server._HTTPServer, request: Any, client_address: Any) -> None:
        seen.errors.append(sys.exc_info()[1])
        real_handle_error(self, request, client_address)

    def sock_shutdown(self: socket.socket, how: int) -> None:
        if self.fileno() == -1:
            seen.shutdown_of_closed.append(self)
        real_sock_shutdown(self, how)

    monkeypatch.setattr(server._HTTPServer, "shutdown_request", shutdown_request)
    monkeypatch.setattr(server._HTTPServer, "handle_error", handle_error)
    monkeypatch.setattr(socket.socket, "shutdown", sock_shutdown)
    return seen


def read_until_reset(srv: FakeMixpanelServer) -> tuple[bytes, ConnectionResetError | None]:
    """Send one export request on a bare socket; read until a reset (or a plain EOF)."""
    auth = base64.b64encode(f"{DEMO_USERNAME}:{DEMO_SECRET}".encode()).decode()
    request = (
        f"GET /api/2.0/export?project_id={DEMO_PROJECT_ID}&from_date=2024-05-01"
        f"&to_date=2024-05-01 HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {auth}\r\n\r\n"
    ).encode()
    received = bytearray()
    # The timeout only stops a hang (a leaked socket never resets); it is no measurement.
    with socket.create_connection(("127.0.0.1", srv.port), timeout=PATIENCE) as sock:
        sock.sendall(request)
        try:
            while piece := sock.recv(65536):
                received += piece
        except ConnectionResetError as exc:
            return bytes(received), exc
    return bytes(received), None


@pytest.mark.parametrize("kind", RESET_KINDS)
def test_rst_fault_resets_and_releases_the_socket_without_os_close(
    make_server: ServerFactory,
    os_close_refuses_sockets: list[int],
    aborted: list[Aborted],
    cleanup: Cleanup,
    kind: str,
) -> None:
    srv = make_server(Dataset(seed=7, events_per_day=150), faults=(kind,), reset_with_rst=True)
    _, reset = read_until_reset(srv)

    assert reset is not None, "the client saw a plain EOF, not a reset"
    (conn,) = aborted
    assert os_close_refuses_sockets == []
    # The RST goes out when the descriptor is released, so by now it is gone
    # (or reused by another socket, with another inode).
    assert _inode(conn.fd) != conn.inode
    # A socket object warns (ResourceWarning) at collection only while it still
    # holds a descriptor; checked here because when collection runs is not ours to know.
    assert conn.sock.fileno() == -1

    assert cleanup.done.wait(PATIENCE), "the server never finished the connection"
    assert cleanup.errors == []
    assert cleanup.shutdown_of_closed == []
    (record,) = srv.stats.records()
    assert record.fault == kind


class FakeSocket:
    """A socket whose handle is no file descriptor, as on Windows."""

    def __init__(self, log: list[tuple[object, ...]]) -> None:
        self.log = log

    def setsockopt(self, level: int, option: int, value: bytes) -> None:
        self.log.append(("setsockopt", level, option, value))

    def shutdown(self, how: int) -> None:
        self.log.append(("shutdown", how))

    def close(self) -> None:
        self.log.append(("close",))

    def detach(self) -> int:
        raise AssertionError("detach() gives a handle that os.close cannot close on Windows")

    def fileno(self) -> int:
        raise AssertionError("a Windows socket handle is not a file descriptor")


class FakeReader:
    """The handler's rfile, the socket's makefile() wrapper."""

    def __init__(self, log: list[tuple[object, ...]]) -> None:
        self.log = log

    def close(self) -> None:
        self.log.append(("rfile.close",))


def fake_handler(log: list[tuple[object, ...]]) -> SimpleNamespace:
    return SimpleNamespace(
        connection=FakeSocket(log), rfile=FakeReader(log), close_connection=False
    )


def refuse_os_close(fd: int) -> None:
    raise AssertionError(f"os.close({fd}) of a socket")


@pytest.mark.parametrize(
    ("platform", "linger"),
    [("win32", struct.pack("HH", 1, 0)), ("linux", struct.pack("ii", 1, 0))],
    ids=["windows", "posix"],
)
def test_rst_abort_closes_the_socket_object(
    monkeypatch: pytest.MonkeyPatch, platform: str, linger: bytes
) -> None:
    monkeypatch.setattr(sys, "platform", platform)
    monkeypatch.setattr(os, "close", refuse_os_close)
    log: list[tuple[object, ...]] = []
    handler = fake_handler(log)

    wire.abort_connection(cast(BaseHTTPRequestHandler, handler), rst=True)

    # The wrapper first: the socket's close() releases the handle only when no
    # makefile() wrapper is open, and until then no RST is sent.
    assert log == [
        ("setsockopt", socket.SOL_SOCKET, socket.SO_LINGER, linger),
        ("rfile.close",),
        ("close",),
    ]
    assert handler.close_connection is True


def test_rst_abort_closes_even_when_linger_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    log: list[tuple[object, ...]] = []
    handler = fake_handler(log)

    def setsockopt_fails(level: int, option: int, value: bytes) -> None:
        log.append(("setsockopt failed",))
        raise OSError(errno.ECONNRESET, "the client is gone already")

    handler.connection.setsockopt = setsockopt_fails
    wire.abort_connection(cast(BaseHTTPRequestHandler, handler), rst=True)

    assert log == [("setsockopt failed",), ("rfile.close",), ("close",)]


def test_fin_abort_only_shuts_down() -> None:
    log: list[tuple[object, ...]] = []
    handler = fake_handler(log)

    wire.abort_connection(cast(BaseHTTPRequestHandler, handler), rst=False)

    # The server's clean-up closes the socket, as after any response.
    assert log == [("shutdown", socket.SHUT_RDWR)]
    assert handler.close_connection is True
