"""Smoke tests for a frozen build: what freezing can break that the other tests don't cover.

They run against ``python -m mpexport`` too; ``packaging/run_frozen_tests.sh``
runs them (with the e2e tests listed in ``packaging/frozen-tests.txt``) against
the PyInstaller build through ``MPEXPORT_TEST_COMMAND``: the version, every
help text (docstrings survive freezing), the demo, UTF-8 mode, running with no
Python on PATH, and TLS (truststore and certifi's bundle are there; REQUESTS_CA_BUNDLE wins).
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import mpexport
from mpexport.cli.main import cli
from mpexport.fakeserver import Dataset, FakeMixpanelServer, ServerConfig
from tests.helpers import (
    TODAY,
    clean_env,
    cli_command,
    day_chunks,
    expected_stdout,
    run_cli,
    service_account_env,
)

WINDOWS = sys.platform == "win32"


def test_version() -> None:
    for flag in ("--version", "-V"):
        result = run_cli([flag], credentials=False)
        assert result.code == 0, result.stderr
        lines = result.stdout.decode().splitlines()
        assert len(lines) == 1 and lines[0].startswith("mpexport"), result.stdout
        assert mpexport.__version__ in lines[0]
        assert result.stderr == ""


@pytest.mark.parametrize("path", [[], ["export"], ["demo"], ["fake-server"]])
def test_help_texts_are_present(path: list[str]) -> None:
    # Built from docstrings: a build with -OO (optimize=2) would print bare options.
    command = cli if not path else cli.commands[path[0]]
    assert command.help
    first_line = command.help.strip().splitlines()[0]
    result = run_cli([*path, "--help"], credentials=False)
    assert result.code == 0, result.stderr
    text = result.stdout.decode()
    assert first_line in text
    assert "--help" in text
    if path == ["export"]:
        assert "Exit codes" in text and "--from" in text


def test_demo_runs_and_second_run_fetches_nothing(tmp_path: Path) -> None:
    db = tmp_path / "demo.duckdb"
    args = ["demo", "--days", "6", "--events-per-day", "300", "--db", str(db),
            "--no-progress"]
    first = run_cli(args, credentials=False)
    assert first.code == 0, first.stderr
    assert "demo: OK" in first.stderr
    assert first.stdout == b""
    assert "Traceback" not in first.stderr
    again = run_cli(args, credentials=False)
    assert again.code == 0, again.stderr
    assert "0/2 chunks fetched (2 already loaded)" in again.stderr, again.stderr
    assert "demo: OK" in again.stderr


def test_utf8_mode_whatever_the_locale() -> None:
    # No PYTHONUTF8 and a C locale: the frozen build must still write UTF-8
    # (its spec sets -X utf8); on Windows a pipe would otherwise get the ANSI
    # code page and mangle the value echoed in the error.
    env = {k: v for k, v in clean_env(service_account_env()).items()
           if k not in ("PYTHONUTF8", "PYTHONIOENCODING", "LANG", "LANGUAGE")
           and not k.startswith("LC_")}
    env["LC_ALL"] = "C"
    value = "Käse-☕-日付"
    proc = subprocess.run([*cli_command(), "export", "--from", value, "--to", "today"],
                          env=env, capture_output=True, timeout=60,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 2
    assert f"'{value}'".encode() in proc.stderr, proc.stderr


def _minimal_env(tmp_path: Path) -> dict[str, str]:
    """An environment whose PATH holds no Python at all (an empty directory)."""
    empty = tmp_path / "empty-path"
    empty.mkdir()
    env = {"PATH": str(empty), "MPEXPORT_STATE_DIR": os.environ["MPEXPORT_STATE_DIR"]}
    if WINDOWS:
        # Windows itself needs these (sockets, the temp dir); none leads to Python.
        for name in ("SYSTEMROOT", "WINDIR", "TEMP", "TMP", "USERPROFILE", "LOCALAPPDATA"):
            if name in os.environ:
                env[name] = os.environ[name]
    else:
        env["TMPDIR"] = str(tmp_path)
        env["HOME"] = str(tmp_path)
    return env


def test_runs_with_no_python_on_path(tmp_path: Path) -> None:
    env = _minimal_env(tmp_path)
    for name in ("python", "python3", "py"):
        assert shutil.which(name, path=env["PATH"]) is None
    version = subprocess.run([*cli_command(), "--version"], env=env, capture_output=True,
                             timeout=60, stdin=subprocess.DEVNULL)
    assert version.returncode == 0, version.stderr
    assert mpexport.__version__.encode() in version.stdout
    db = tmp_path / "demo.duckdb"
    demo = subprocess.run([*cli_command(), "demo", "--days", "3", "--events-per-day", "200",
                           "--db", str(db), "--no-progress"],
                          env=env, capture_output=True, timeout=120, stdin=subprocess.DEVNULL)
    assert demo.returncode == 0, demo.stderr
    assert b"demo: OK" in demo.stderr


# --- TLS: the CA bundle ------------------------------------------------------

START = dt.date(2024, 5, 1)
END = dt.date(2024, 5, 4)


@pytest.fixture(scope="module")
def self_signed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A throwaway certificate for 127.0.0.1 and its key (made with the openssl CLI)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command is needed to make a test certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=60,
    )
    return cert, key


@pytest.fixture
def https_server(self_signed: tuple[Path, Path]) -> Iterator[tuple[str, Dataset]]:
    """The built-in server behind TLS with the self-signed certificate: (url, dataset)."""
    cert, key = self_signed
    dataset = Dataset(seed=4, events_per_day=60)
    server = FakeMixpanelServer(ServerConfig(dataset=dataset, today=TODAY))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    httpd = server._httpd
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    server.start()
    try:
        yield f"https://127.0.0.1:{server.port}", dataset
    finally:
        server.close()


def _https_export(url: str) -> list[str]:
    return ["export", "--api-url", url, "--from", START.isoformat(), "--to", END.isoformat(),
            "--chunk-days", "2", "--retries", "0", "--workers", "2"]


@pytest.fixture
def no_ca_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE", "SSL_CERT_DIR"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.usefixtures("no_ca_overrides")
def test_default_ca_bundle_is_found_and_rejects_unknown_cert(
    https_server: tuple[str, Dataset],
) -> None:
    # The system's store (truststore, bundled) and certifi's cacert.pem are
    # found (a missing bundle says "does not exist") and, not holding the
    # self-signed certificate, reject it: at once, in one line.
    url, _ = https_server
    result = run_cli(_https_export(url))
    assert result.code == 1, result.stderr
    assert result.stdout == b""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "is not trusted" in lines[0] and "system's certificate store" in lines[0], lines[0]
    assert "does not exist" not in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.usefixtures("no_ca_overrides")
def test_requests_ca_bundle_is_honoured(
    https_server: tuple[str, Dataset], self_signed: tuple[Path, Path],
) -> None:
    url, dataset = https_server
    result = run_cli(_https_export(url), env={"REQUESTS_CA_BUNDLE": str(self_signed[0])})
    assert result.code == 0, result.stderr
    assert result.stdout == expected_stdout(dataset, day_chunks(START, END, 2))


@pytest.mark.usefixtures("no_ca_overrides")
def test_ssl_cert_file_is_honoured(
    https_server: tuple[str, Dataset], self_signed: tuple[Path, Path],
) -> None:
    url, dataset = https_server
    result = run_cli(_https_export(url), env={"SSL_CERT_FILE": str(self_signed[0])})
    assert result.code == 0, result.stderr
    assert result.stdout == expected_stdout(dataset, day_chunks(START, END, 2))



@pytest.mark.usefixtures("no_ca_overrides")
def test_requests_ca_bundle_wins_over_ssl_cert_file(
    https_server: tuple[str, Dataset], self_signed: tuple[Path, Path],
) -> None:
    import certifi

    url, dataset = https_server
    result = run_cli(_https_export(url), env={"REQUESTS_CA_BUNDLE": str(self_signed[0]),
                                              "SSL_CERT_FILE": certifi.where()})
    assert result.code == 0, result.stderr
    assert result.stdout == expected_stdout(dataset, day_chunks(START, END, 2))
