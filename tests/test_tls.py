"""Certificates and proxies: what no retry can fix stops the run at once, and costs no query.

Against a server whose certificate nothing trusts, or a proxy that wants
credentials (HTTP 407), the run ends after the first attempt with one line
naming the problem and the fix, and the hour's shared budget holds no start
for it: the attempt never reached Mixpanel. Attempts that never connected
(connection refused, a name that does not resolve, a failed TLS handshake)
are retried as before but given back to the budget too.

The certificate is made here (with the ``cryptography`` package), for
127.0.0.1, and trusted by nothing. The "system store" test points OpenSSL's
default folder (``SSL_CERT_DIR``, which truststore's Linux backend reads and
requests alone ignores) at it.
"""

from __future__ import annotations

import datetime as dt
import http.server
import ipaddress
import json
import shutil
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import urllib3.exceptions

from mpexport.errors import CertificateError, CredentialsError, ExitCode, ProxyCredentialsError
from mpexport.fakeserver import (
    DEMO_PROJECT_ID,
    DEMO_SECRET,
    DEMO_USERNAME,
    Dataset,
    FakeMixpanelServer,
    ServerConfig,
)
from mpexport.mixpanel.credentials import Credentials
from mpexport.mixpanel.endpoints import Endpoint
from mpexport.mixpanel.fetch import Query, fetch_once
from mpexport.mixpanel.transport import (
    FetchSettings,
    RetryableError,
    connection_failure,
    new_session,
    with_ca_file,
)
from mpexport.model import Chunk, QueryFilters
from tests.helpers import TODAY, ServerFactory, day_chunks, expected_stdout, run_cli

START = dt.date(2024, 5, 1)
END = dt.date(2024, 5, 3)  # three one-day chunks: a retry or a next chunk would show
CREDENTIALS = Credentials(username=DEMO_USERNAME, secret=DEMO_SECRET, project_id=DEMO_PROJECT_ID)
CA_VARIABLES = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE", "SSL_CERT_DIR")
PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY",
                   "all_proxy", "NO_PROXY", "no_proxy")


def export_args(url: str) -> list[str]:
    # One worker: the first failure is the only attempt that can be under way.
    return ["export", "--api-url", url, "--from", START.isoformat(), "--to", END.isoformat(),
            "--chunk-days", "1", "--workers", "1", "--no-progress"]


def recorded_starts(state: Path) -> list[list[float]]:
    """The starts each budget file of the state folder holds."""
    return [json.loads(p.read_text())["starts"] for p in sorted(state.glob("ratelimit-*.json"))]


@pytest.fixture(autouse=True)
def no_ca_or_proxy_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    """The runs see neither the user's CA variables nor a proxy, unless a test sets them."""
    for name in (*CA_VARIABLES, *PROXY_VARIABLES):
        monkeypatch.delenv(name, raising=False)


# --- an HTTPS server with a certificate nobody trusts -----------------------------------


@pytest.fixture(scope="module")
def untrusted_cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key, as PEM files."""
    x509 = pytest.importorskip("cryptography.x509")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mpexport test")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("untrusted")
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


class HttpsServer:
    """The built-in server behind TLS; ``connections`` counts the handshakes it was asked for."""

    def __init__(self, cert: tuple[Path, Path], dataset: Dataset) -> None:
        self.dataset = dataset
        self.server = FakeMixpanelServer(ServerConfig(dataset=dataset, today=TODAY))
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(*cert)
        httpd = self.server._httpd
        httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
        self.connections = 0
        accept = httpd.get_request

        def counted() -> Any:
            # Each accept of the TLS socket is one connection and its handshake
            # (made inside accept); a refused handshake raises from here.
            self.connections += 1
            return accept()

        httpd.get_request = counted  # type: ignore[method-assign]
        self.url = f"https://127.0.0.1:{self.server.port}"

    @property
    def requests(self) -> int:
        """HTTP requests that arrived (after a handshake the client accepted)."""
        return len(self.server.stats)


@pytest.fixture
def https_server(untrusted_cert: tuple[Path, Path]) -> Iterator[HttpsServer]:
    server = HttpsServer(untrusted_cert, Dataset(seed=4, events_per_day=40))
    server.server.start()
    try:
        yield server
    finally:
        server.server.close()


def test_untrusted_certificate_stops_the_export_after_one_attempt(
    https_server: HttpsServer, isolated_state: Path
) -> None:
    result = run_cli(export_args(https_server.url))
    assert result.code == ExitCode.PARTIAL, result.stderr
    assert result.stdout == b""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert line.startswith("mpexport: error: the certificate of 127.0.0.1:"), line
    assert "is not trusted" in line, line
    if sys.platform.startswith("linux"):  # OpenSSL's words; Windows and macOS have their own
        assert "self-signed certificate" in line, line
    # The fix: the system's store, or the variables that name a bundle.
    for needle in ("system's certificate store", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE"):
        assert needle in line, line
    assert "Traceback" not in result.stderr and "retrying" not in result.stderr
    # One handshake, no HTTP request, and nothing counted against the hour.
    assert https_server.connections == 1
    assert https_server.requests == 0
    assert recorded_starts(isolated_state) == [[]]


def test_a_bundle_that_lacks_the_root_is_named(
    https_server: HttpsServer, isolated_state: Path, tmp_path: Path
) -> None:
    import certifi

    bundle = tmp_path / "corporate.pem"
    shutil.copyfile(certifi.where(), bundle)
    result = run_cli(export_args(https_server.url), env={"SSL_CERT_FILE": str(bundle)})
    assert result.code == ExitCode.PARTIAL, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "is not trusted" in lines[0], lines[0]
    assert f"verified with {bundle}, the CA bundle that" in lines[0], lines[0]
    assert https_server.connections == 1
    assert recorded_starts(isolated_state) == [[]]


def test_a_bundle_that_does_not_exist_is_named(tmp_path: Path, isolated_state: Path) -> None:
    missing = tmp_path / "no-such-bundle.pem"
    result = run_cli(export_args("https://127.0.0.1:9"), env={"SSL_CERT_FILE": str(missing)})
    assert result.code == ExitCode.PARTIAL, result.stderr
    assert result.stderr.strip().splitlines() == [
        f"mpexport: error: the CA bundle {missing} does not exist (REQUESTS_CA_BUNDLE, "
        "CURL_CA_BUNDLE or SSL_CERT_FILE names it: fix the path, or unset the variable to use "
        "the system's certificate store)"]
    assert recorded_starts(isolated_state) == [[]]


def test_a_bundle_that_holds_the_root_is_trusted(
    https_server: HttpsServer, untrusted_cert: tuple[Path, Path]
) -> None:
    for variable in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE"):
        result = run_cli(export_args(https_server.url), env={variable: str(untrusted_cert[0])})
        assert result.code == 0, result.stderr
        assert result.stdout == expected_stdout(https_server.dataset, day_chunks(START, END, 1))


@pytest.mark.skipif(not sys.platform.startswith("linux"),
                    reason="the system store is OpenSSL's folder only on Linux")
def test_the_system_store_is_trusted(
    https_server: HttpsServer, untrusted_cert: tuple[Path, Path], tmp_path: Path
) -> None:
    # OpenSSL's default folder: what Linux's store is to truststore. certifi
    # alone (requests' default) does not hold this certificate.
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command names the certificate's hash link")
    digest = subprocess.run([openssl, "x509", "-hash", "-noout", "-in", str(untrusted_cert[0])],
                            check=True, capture_output=True, text=True).stdout.strip()
    store = tmp_path / "store"
    store.mkdir()
    shutil.copyfile(untrusted_cert[0], store / f"{digest}.0")
    result = run_cli(export_args(https_server.url), env={"SSL_CERT_DIR": str(store)})
    assert result.code == 0, result.stderr
    assert result.stdout == expected_stdout(https_server.dataset, day_chunks(START, END, 1))


def test_check_names_the_certificate_problem(https_server: HttpsServer) -> None:
    result = run_cli(["check", "--api-url", https_server.url])
    assert result.code == ExitCode.PARTIAL, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "is not trusted" in lines[0] and "SSL_CERT_FILE" in lines[0], lines[0]
    assert "did not answer" not in lines[0]
    assert https_server.connections == 1


def test_fetch_once_raises_the_certificate_error(https_server: HttpsServer,
                                                 tmp_path: Path) -> None:
    query = Query(Endpoint(https_server.url), CREDENTIALS, QueryFilters())
    with pytest.raises(CertificateError, match="is not trusted"):
        fetch_once(new_session(), query, Chunk(0, START, START), tmp_path, FetchSettings(),
                   threading.Event(), lambda _: None)
    assert list(tmp_path.iterdir()) == []


def test_sessions_verify_with_the_system_store_unless_a_bundle_is_named() -> None:
    import truststore

    adapter: Any = new_session().get_adapter("https://api.mixpanel.com")
    context = adapter.poolmanager.connection_pool_kw["ssl_context"]
    assert isinstance(context, truststore.SSLContext)
    # Process-wide ssl is left as it was: a library caller's other clients are not changed.
    assert ssl.SSLContext is not truststore.SSLContext
    named: Any = new_session(ca_file="/some/bundle.pem")
    assert named.verify == "/some/bundle.pem"
    assert "ssl_context" not in named.get_adapter("https://x").poolmanager.connection_pool_kw


def test_the_bundle_variables_in_requests_order() -> None:
    assert with_ca_file(None, {}).ca_file is None
    assert with_ca_file(None, {"SSL_CERT_FILE": "s"}).ca_file == "s"
    assert with_ca_file(None, {"SSL_CERT_FILE": "s", "CURL_CA_BUNDLE": "c"}).ca_file == "c"
    both = {"SSL_CERT_FILE": "s", "CURL_CA_BUNDLE": "c", "REQUESTS_CA_BUNDLE": "r"}
    assert with_ca_file(None, both).ca_file == "r"
    assert with_ca_file(FetchSettings(ca_file="mine"), both).ca_file == "mine"


# --- a proxy that asks for credentials ---------------------------------------------------


class RefusingProxy:
    """A loopback proxy that answers every CONNECT and GET with 407; counts them."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def refuse(self) -> None:
                outer.requests.append(f"{self.command} {self.path}")
                self.send_response(407, "Proxy Authentication Required")
                self.send_header("Proxy-Authenticate", 'Basic realm="corp"')
                self.send_header("Content-Length", "0")
                self.send_header("Connection", "close")
                self.end_headers()

            do_CONNECT = refuse
            do_GET = refuse

            def log_message(self, format: str, *args: Any) -> None:
                """Silence the access log."""

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.httpd.server_address[1]}"


@pytest.fixture
def refusing_proxy() -> Iterator[RefusingProxy]:
    proxy = RefusingProxy()
    proxy.thread.start()
    try:
        yield proxy
    finally:
        proxy.httpd.shutdown()
        proxy.httpd.server_close()


def proxy_env(name: str, url: str) -> dict[str, str]:
    # Both spellings: Python takes the lower-case one first. Nothing bypasses the proxy.
    return {name.upper(): url, name.lower(): url, "NO_PROXY": "", "no_proxy": ""}


def test_a_proxy_asking_for_credentials_on_connect_is_exit_3(
    refusing_proxy: RefusingProxy, isolated_state: Path
) -> None:
    # The tunnel is refused before any TLS: the target never sees a byte.
    env = proxy_env("https_proxy", f"http://someone:pr0xy-pass@{refusing_proxy.address}")
    result = run_cli(export_args("https://127.0.0.1:9"), env=env)
    assert result.code == ExitCode.CREDENTIALS, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "the proxy asked for credentials (HTTP 407" in lines[0], lines[0]
    assert "HTTPS_PROXY" in lines[0], lines[0]
    assert "pr0xy-pass" not in result.stderr
    assert "Traceback" not in result.stderr
    assert refusing_proxy.requests == ["CONNECT 127.0.0.1:9"]
    assert recorded_starts(isolated_state) == [[]]


def test_a_proxy_asking_for_credentials_on_get_is_exit_3(
    refusing_proxy: RefusingProxy, make_server: ServerFactory, isolated_state: Path
) -> None:
    # Plain HTTP (loopback only) goes through the proxy as a GET: the 407 is
    # its answer, and Mixpanel itself never answers 407.
    server = make_server(Dataset(seed=4, events_per_day=40))
    result = run_cli(export_args(server.url),
                     env=proxy_env("http_proxy", f"http://{refusing_proxy.address}"))
    assert result.code == ExitCode.CREDENTIALS, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "the proxy asked for credentials (HTTP 407" in lines[0], lines[0]
    assert len(refusing_proxy.requests) == 1 and len(server.stats) == 0
    assert recorded_starts(isolated_state) == [[]]


def test_proxy_credentials_error_is_a_credentials_error() -> None:
    assert issubclass(ProxyCredentialsError, CredentialsError)
    error = ProxyCredentialsError("the proxy asked for credentials (HTTP 407)", "fix it")
    assert error.exit_code == ExitCode.CREDENTIALS


# --- attempts that never connected are given back to the hour ----------------------------


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_refused_connection_is_retried_but_not_counted(isolated_state: Path) -> None:
    result = run_cli([*export_args(f"http://127.0.0.1:{closed_port()}"), "--retries", "0"])
    assert result.code == ExitCode.PARTIAL, result.stderr
    assert "could not connect" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert recorded_starts(isolated_state) == [[]]


def test_a_failed_handshake_is_retried_but_not_counted(
    make_server: ServerFactory, isolated_state: Path
) -> None:
    # https:// to a plain HTTP server: the handshake fails, no request is sent.
    server = make_server(Dataset(seed=4, events_per_day=40))
    url = server.url.replace("http://", "https://")
    result = run_cli([*export_args(url), "--retries", "0"])
    assert result.code == ExitCode.PARTIAL, result.stderr
    assert "TLS handshake failed: SSLError" in result.stderr, result.stderr
    assert len(server.stats) == 0
    assert recorded_starts(isolated_state) == [[]]


def test_an_attempt_that_reached_the_server_still_counts(
    make_server: ServerFactory, isolated_state: Path
) -> None:
    server = make_server(Dataset(seed=4, events_per_day=40), faults=("http502",),
                         fault_attempts=1000)
    result = run_cli([*export_args(server.url), "--retries", "0"])
    assert result.code == ExitCode.PARTIAL, result.stderr
    assert len(server.stats) == 3
    assert [len(starts) for starts in recorded_starts(isolated_state)] == [3]


def _wrapped(reason: BaseException) -> requests.ConnectionError:
    """What requests raises for a failure urllib3 met while connecting."""
    return requests.ConnectionError(
        urllib3.exceptions.MaxRetryError(None, "/api/2.0/export", reason))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (_wrapped(urllib3.exceptions.NameResolutionError(
            "data.mixpanel.com", None,  # type: ignore[arg-type]
            socket.gaierror(-2, "Name or service not known"))),
         "could not connect: NameResolutionError"),
        (_wrapped(urllib3.exceptions.NewConnectionError(
            None, "Failed to establish a new connection: [Errno 111] Connection refused")),  # type: ignore[arg-type]
         "could not connect: NewConnectionError"),
        (requests.exceptions.SSLError(urllib3.exceptions.MaxRetryError(
            None, "/", urllib3.exceptions.SSLError(  # type: ignore[arg-type]
                ssl.SSLError(1, "[SSL: SSLV3_ALERT_HANDSHAKE_FAILURE] handshake failure")))),
         "TLS handshake failed: SSLError"),
        (requests.exceptions.ProxyError(urllib3.exceptions.MaxRetryError(
            None, "/", urllib3.exceptions.ProxyError(  # type: ignore[arg-type]
                "Unable to connect to proxy",
                OSError("Tunnel connection failed: 502 Bad Gateway")))),
         "the proxy refused the tunnel: Tunnel connection failed: 502 Bad Gateway"),
    ],
    ids=["dns", "refused", "handshake", "tunnel"],
)
def test_failures_before_the_server_are_retried_and_not_counted(
    error: requests.RequestException, reason: str
) -> None:
    failure = connection_failure(error, "data.mixpanel.com", FetchSettings())
    assert isinstance(failure, RetryableError)
    assert failure.reason == reason
    assert not failure.reached and not failure.size_related


def test_a_reset_after_connecting_still_counts() -> None:
    error = requests.ConnectionError(urllib3.exceptions.ProtocolError(
        "Connection aborted.", ConnectionResetError(104, "Connection reset by peer")))
    failure = connection_failure(error, "data.mixpanel.com", FetchSettings())
    assert isinstance(failure, RetryableError)
    assert failure.reason == "request failed: ConnectionError"
    assert failure.reached
