"""Where a Parquet dataset lives: a local folder or an object store, behind one small interface.

``--parquet`` takes a folder or a URL: ``s3://bucket/prefix``, ``gs://bucket/prefix`` or
``az://container/prefix`` (:mod:`mpexport.sinks.lake.objects`). Every object is
written whole or not at all: a local file is written beside its name and moved over it, an
object is one PUT (or one completed multipart upload), so a reader sees the old object or
the new one, never a part.

Credentials come from the environment only (``AWS_*``, ``GOOGLE_*``, ``AZURE_*``, read by
obstore itself): a URL with ``user:password@`` is refused, and every message that leaves
this module has the secrets of the environment masked. Plain ``http://`` endpoints
(``AWS_ENDPOINT_URL`` for MinIO and the like) are accepted on loopback only, as for
``--api-url``: anywhere else credentials would cross a network in clear text.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import os
import re
import shutil
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from mpexport.atomic import patiently, temp_sibling
from mpexport.errors import UsageError
from mpexport.filelock import held_by_another_process, lock, unlock
from mpexport.loopback import is_loopback

# Pauses between attempts at replacing a file that is in use: a reader that
# only glanced at it (a preview, a virus scan) is gone within a second.
# Shorter than mpexport.atomic's: a held day file is deferred to the next
# run, not a failure, so waiting long buys little.
BACKOFF_SECONDS = (0.05, 0.1, 0.2, 0.4)
SCHEMES = ("s3", "gs", "az")
# The variables obstore reads an endpoint from, per scheme: each is checked
# for plain HTTP, since obstore would otherwise follow them on its own.
ENDPOINT_VARIABLES: dict[str, tuple[str, ...]] = {
    "s3": ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_ENDPOINT"),
    "gs": (),
    "az": ("AZURE_STORAGE_ENDPOINT", "AZURE_ENDPOINT"),
}
# Values masked in every message: what could authenticate a request.
SECRET_VARIABLES = (
    "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ACCESS_KEY_ID",
    "GOOGLE_SERVICE_ACCOUNT_KEY", "AZURE_STORAGE_ACCOUNT_KEY", "AZURE_STORAGE_ACCESS_KEY",
    "AZURE_STORAGE_SAS_KEY", "AZURE_STORAGE_TOKEN", "AZURE_CLIENT_SECRET",
)
EXTRA_HINT = "install the object-store support: pip install 'mpexport[lake]'"
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]+://")  # two letters at least: C:\ is a path


class FileInUse(Exception):
    """A local file could not be replaced or deleted: another program has it open."""

    def __init__(self, path: Path) -> None:
        super().__init__(f"{path} is in use by another program")
        self.path = path


class StoreError(OSError):
    """An object store refused or failed a request (the message has no secrets)."""


@dataclass(frozen=True)
class Versioned:
    """An object's content and the version that conditional writes compare against."""

    data: bytes
    version: str  # opaque: an ETag (and generation) for object stores, a digest for files
    modified: dt.datetime | None = None  # when it was last written, as the store says


class Store(Protocol):
    """A flat namespace of objects under one root; keys use ``/``."""

    url: str  # for messages: the folder or the URL as given

    def staging_path(self, key: str) -> Path:
        """A fresh local path to write the file that :meth:`put_file` publishes as ``key``."""
        ...

    def put_file(self, key: str, path: Path) -> None:
        """Publish the local file ``path`` as ``key`` atomically; ``path`` is consumed."""
        ...

    def put_bytes(self, key: str, data: bytes) -> None:
        """Publish ``data`` as ``key`` atomically."""
        ...

    def get_bytes(self, key: str) -> bytes | None:
        """The content of ``key``, or None when there is no such object."""
        ...

    def get_file(self, key: str, path: Path) -> bool:
        """Copy ``key`` to the local ``path``; False when there is no such object."""
        ...

    def list_keys(self, prefix: str = "") -> list[str]:
        """Every key under ``prefix`` (a folder-like prefix ending in ``/``, or empty)."""
        ...

    def delete(self, key: str) -> None:
        """Remove ``key``; a missing object is not an error."""
        ...

    # Conditional writes, for the lake's lock: each one either happens
    # whole, on the state it was given, or not at all.

    def create_bytes(self, key: str, data: bytes) -> str | None:
        """Publish ``data`` as ``key`` only if there is no such object: its version, else None."""
        ...

    def get_versioned(self, key: str) -> Versioned | None:
        """The content and version of ``key``, or None when there is no such object."""
        ...

    def replace_bytes_if(self, key: str, data: bytes, version: str) -> str | None:
        """Replace ``key`` only if it is still at ``version``: the new version, else None."""
        ...

    def delete_if(self, key: str, version: str) -> bool:
        """Remove ``key`` if it is still at ``version``; False when it changed or is gone."""
        ...


def is_url(text: str) -> bool:
    """True when ``text`` is a URL (``scheme://``) rather than a local path."""
    return _URL.match(text) is not None


def redact(text: str, environ: Mapping[str, str]) -> str:
    """``text`` with the values of ``environ``'s secret variables masked."""
    for name in SECRET_VARIABLES:
        value = environ.get(name)
        if value and len(value) >= 4:  # a short value would mask ordinary words
            text = text.replace(value, "***")
    return text


@dataclass(frozen=True)
class Location:
    """A checked ``--parquet`` value: a local folder, or a URL and how to reach it."""

    text: str
    scheme: str | None = None  # None: a local folder
    allow_http: bool = False  # the endpoint is plain HTTP on loopback
    # The environment's secret variables, for masking messages: never shown.
    masked: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)

    @property
    def path(self) -> Path:
        """The local folder (only for a location without a scheme)."""
        return Path(self.text)


def parse_location(text: str, environ: Mapping[str, str]) -> Location:
    """Check a ``--parquet`` value; raise :class:`UsageError` with the fix when it is wrong.

    ``environ`` is the run's environment: its endpoint variables say whether
    plain HTTP is allowed, its secrets are masked in the store's messages.
    Touches no network and no file: a dry run checks it too.
    """
    if not text:
        raise UsageError("--parquet needs a folder or a URL", "e.g. --parquet s3://bucket/events")
    if not is_url(text):
        return Location(text)
    parts = urllib.parse.urlsplit(text)
    scheme = parts.scheme.lower()
    if parts.username is not None or parts.password is not None:
        raise UsageError("--parquet URLs must not contain credentials (user:password@)",
                         "set them in the environment, e.g. AWS_ACCESS_KEY_ID and "
                         "AWS_SECRET_ACCESS_KEY")
    if scheme not in SCHEMES:
        raise UsageError(f"--parquet does not support {scheme}:// URLs",
                         "use a folder, or s3://bucket/prefix, gs://bucket/prefix or "
                         "az://container/prefix")
    if not parts.netloc:
        raise UsageError(f"--parquet {text!r} names no bucket", f"e.g. {scheme}://bucket/events")
    if parts.query or parts.fragment:
        raise UsageError(f"--parquet {text!r} has a query or a fragment",
                         "give bucket and prefix only; options go in the environment")
    allow_http = False
    for name in ENDPOINT_VARIABLES[scheme]:
        endpoint = environ.get(name)
        if not endpoint:
            continue
        address = urllib.parse.urlsplit(endpoint)
        if address.scheme == "http":
            if not is_loopback(address.hostname or ""):
                raise UsageError(
                    f"{name} uses plain HTTP to a host that is not loopback",
                    "credentials are only sent over HTTPS; use https://",
                )
            allow_http = True
        elif address.scheme != "https":
            raise UsageError(f"{name} is not an http(s) URL", "e.g. https://minio.example.com")
    masked = {name: environ[name] for name in SECRET_VARIABLES if environ.get(name)}
    return Location(text, scheme, allow_http, masked)


def open_store(location: str | os.PathLike[str] | Store, *, staging: Path | None = None,
               sleep: Callable[[float], None] = time.sleep,
               environ: Mapping[str, str] | None = None) -> Store:
    """The store of a ``--parquet`` value (a store is returned as it is).

    ``staging`` is the local folder where an object store's files are written
    before their upload (default: the system's temp folder). A URL needs the
    run's ``environ`` (see :func:`parse_location`): the run opens its store
    with it and hands the store down, so deeper layers only ever open folders.
    """
    if not isinstance(location, (str, os.PathLike)):
        return location
    text = os.fspath(location)
    if environ is None:
        if is_url(text):
            raise ValueError(f"opening {text} needs the run's environment (environ=)")
        environ = {}  # a folder needs nothing of it
    checked = parse_location(text, environ)
    if checked.scheme is None:
        return LocalStore(checked.path, sleep=sleep)
    from mpexport.sinks.lake.objects import ObjectStore

    return ObjectStore(checked, staging=staging)


def _patiently(action: Callable[[], None], path: Path, sleep: Callable[[float], None]) -> None:
    """Run ``action`` (a replace or delete of ``path``), retrying while the file is in use.

    The retry is :func:`mpexport.atomic.patiently`'s; a file still held after
    it becomes :class:`FileInUse` (deferred by the caller). A read-only file
    or a permission is neither retried nor deferred.
    """
    try:
        patiently(action, path, sleep=sleep, backoff=BACKOFF_SECONDS)
    except OSError as exc:
        if held_by_another_process(exc, path):
            raise FileInUse(path) from exc
        raise


class LocalStore:
    """A folder; each file is written beside its name and moved over it.

    On Windows a file that a reader (Power BI, a DuckDB shell) has open cannot
    be replaced or deleted: after a few short retries :class:`FileInUse` is
    raised, the old file untouched.
    """

    def __init__(self, root: Path, *, sleep: Callable[[float], None] = time.sleep) -> None:
        if root.exists() and not root.is_dir():
            raise UsageError(f"the Parquet output is not a directory: {root}",
                             "give a directory path (it is created if missing)")
        parent = root.parent if str(root.parent) else Path(".")
        if not root.exists() and not parent.is_dir():
            raise UsageError(
                f"the parent directory of the Parquet output does not exist: {root.parent}",
                "create it first",
            )
        self.root = root
        self.url = str(root)
        self._sleep = sleep

    def path(self, key: str) -> Path:
        """The local file of ``key``."""
        return self.root.joinpath(*key.split("/"))

    def staging_path(self, key: str) -> Path:
        # Beside the final name (same filesystem: the move is atomic); the
        # name does not end in .parquet, so a glob like */*.parquet never
        # picks up a half-written file left by a crash.
        final = self.path(key)
        final.parent.mkdir(parents=True, exist_ok=True)
        return temp_sibling(final)

    def put_file(self, key: str, path: Path) -> None:
        final = self.path(key)
        final.parent.mkdir(parents=True, exist_ok=True)
        _patiently(lambda: os.replace(path, final), final, self._sleep)

    def put_bytes(self, key: str, data: bytes) -> None:
        temp = self.staging_path(key)
        try:
            temp.write_bytes(data)
            self.put_file(key, temp)
        finally:
            with contextlib.suppress(OSError):
                temp.unlink(missing_ok=True)

    def get_bytes(self, key: str) -> bytes | None:
        try:
            return self.path(key).read_bytes()
        except FileNotFoundError:
            return None

    def get_file(self, key: str, path: Path) -> bool:
        try:
            shutil.copyfile(self.path(key), path)
        except FileNotFoundError:
            return False
        return True

    def list_keys(self, prefix: str = "") -> list[str]:
        base = self.path(prefix.rstrip("/")) if prefix else self.root
        if not base.is_dir():
            return []
        return sorted(p.relative_to(self.root).as_posix() for p in base.rglob("*")
                      if p.is_file())

    def delete(self, key: str) -> None:
        final = self.path(key)
        _patiently(lambda: final.unlink(missing_ok=True), final, self._sleep)
        with contextlib.suppress(OSError):
            final.parent.rmdir()  # the partition's folder, once empty

    def create_bytes(self, key: str, data: bytes) -> str | None:
        final = self.path(key)
        final.parent.mkdir(parents=True, exist_ok=True)
        temp = temp_sibling(final)
        try:
            temp.write_bytes(data)
            try:
                # A hard link appears whole and fails if the name exists:
                # nobody ever reads a half-written object.
                os.link(temp, final)
            except FileExistsError:
                return None
            except OSError:
                # A filesystem without hard links: create-if-absent, then write.
                try:
                    handle = os.open(final, os.O_WRONLY | os.O_CREAT | os.O_EXCL
                                     | getattr(os, "O_BINARY", 0), 0o644)
                except FileExistsError:
                    return None
                with os.fdopen(handle, "wb") as out:
                    out.write(data)
        finally:
            with contextlib.suppress(OSError):
                temp.unlink(missing_ok=True)
        return _digest(data)

    def get_versioned(self, key: str) -> Versioned | None:
        final = self.path(key)
        try:
            data = final.read_bytes()
            modified = dt.datetime.fromtimestamp(final.stat().st_mtime, dt.UTC)
        except FileNotFoundError:
            return None
        return Versioned(data, _digest(data), modified)

    def replace_bytes_if(self, key: str, data: bytes, version: str) -> str | None:
        with self._guard(key):
            current = self.get_versioned(key)
            if current is None or current.version != version:
                return None
            self.put_bytes(key, data)
        return _digest(data)

    def delete_if(self, key: str, version: str) -> bool:
        with self._guard(key):
            current = self.get_versioned(key)
            if current is None or current.version != version:
                return False
            self.delete(key)
        return True

    @contextlib.contextmanager
    def _guard(self, key: str) -> Iterator[None]:
        """Compare-and-swap on ``key``: other processes' swaps wait (for milliseconds).

        A folder has no conditional replace, so each one is a read, a
        compare and a replace under an OS lock on a file beside the key (the
        key's own file is replaced, so it cannot carry the lock). The kernel
        drops the lock when its process dies.
        """
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path.with_name(path.name + ".guard"), "a+b") as handle:
            lock(handle)
            try:
                yield
            finally:
                unlock(handle)


def _digest(data: bytes) -> str:
    # The lock's content names its holder and counts renewals, so equal
    # digests mean the same write.
    return hashlib.sha256(data).hexdigest()
