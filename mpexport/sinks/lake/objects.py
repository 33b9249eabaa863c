"""The object stores of ``--parquet`` URLs (S3, GCS, Azure) through obstore, and their errors.

obstore is ``mpexport[lake]``'s one dependency: imported only when a URL is
used, so ``--help``, NDJSON, ``--db`` and folder lakes never load it. It
reads the credentials from the environment itself; nothing here ever holds
them, and every message has the environment's secrets masked
(:func:`~mpexport.sinks.lake.store.redact`).
"""

from __future__ import annotations

import contextlib
import json
import secrets
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mpexport.errors import CredentialsError, MpexportError, UnavailableError, UsageError
from mpexport.sinks.lake.store import EXTRA_HINT, Location, StoreError, Versioned, redact

if TYPE_CHECKING:
    from obstore import UpdateVersion
    from obstore.store import ClientConfig


class ObjectStore:
    """An S3, GCS or Azure location through obstore; the credentials are obstore's to read."""

    def __init__(self, location: Location, *, staging: Path | None = None) -> None:
        try:
            from obstore.store import from_url
        except ImportError:
            raise UsageError(f"--parquet {location.scheme}:// URLs need the obstore package",
                             EXTRA_HINT) from None
        self.url = location.text
        self.masked = location.masked  # what every message of this store masks
        self._staging = staging
        options: ClientConfig = {"allow_http": True} if location.allow_http else {}
        try:
            self._store: Any = from_url(location.text, client_options=options)
        except Exception as exc:
            raise UsageError(f"cannot use --parquet {self.url}: "
                             f"{_first_line(exc, self.masked)}",
                             "check the URL and the AWS_*/GOOGLE_*/AZURE_* variables") from None

    def staging_path(self, key: str) -> Path:
        import tempfile

        folder = self._staging if self._staging is not None else Path(tempfile.gettempdir())
        return folder / f".mpexport-upload-{secrets.token_hex(8)}.tmp"

    def _call(self, what: str, action: Callable[[], Any]) -> Any:
        try:
            return action()
        except FileNotFoundError:
            raise
        except Exception as exc:
            raise StoreError(f"{what} {self.url}: {_first_line(exc, self.masked)}") from None

    def put_file(self, key: str, path: Path) -> None:
        import obstore

        try:
            self._call(f"uploading {key} to", lambda: obstore.put(self._store, key, path))
        except FileNotFoundError as exc:  # the bucket is missing
            raise StoreError(f"uploading {key} to {self.url}: "
                             f"{_first_line(exc, self.masked)}") from None
        finally:
            with contextlib.suppress(OSError):
                path.unlink(missing_ok=True)

    def put_bytes(self, key: str, data: bytes) -> None:
        import obstore

        try:
            self._call(f"uploading {key} to", lambda: obstore.put(self._store, key, data))
        except FileNotFoundError as exc:
            raise StoreError(f"uploading {key} to {self.url}: "
                             f"{_first_line(exc, self.masked)}") from None

    def get_bytes(self, key: str) -> bytes | None:
        import obstore

        try:
            result = self._call(f"reading {key} from", lambda: obstore.get(self._store, key))
            return bytes(result.bytes())
        except FileNotFoundError:
            return None

    def get_file(self, key: str, path: Path) -> bool:
        import obstore

        try:
            result = self._call(f"reading {key} from", lambda: obstore.get(self._store, key))
            with path.open("wb") as handle:
                for piece in result:
                    handle.write(piece)
        except FileNotFoundError:
            return False
        return True

    def list_keys(self, prefix: str = "") -> list[str]:
        import obstore

        def listing() -> list[str]:
            pages = obstore.list(self._store, prefix.rstrip("/") or None)
            return sorted(str(meta["path"]) for page in pages for meta in page)

        try:
            found: list[str] = self._call("listing", listing)
        except FileNotFoundError as exc:  # the bucket is missing
            raise StoreError(f"listing {self.url}: {_first_line(exc, self.masked)}") from None
        return found

    def delete(self, key: str) -> None:
        import obstore

        with contextlib.suppress(FileNotFoundError):
            self._call(f"deleting {key} from", lambda: obstore.delete(self._store, key))


    def create_bytes(self, key: str, data: bytes) -> str | None:
        import obstore

        return self._conditional(f"creating {key} in",
                                 lambda: obstore.put(self._store, key, data, mode="create"))

    def get_versioned(self, key: str) -> Versioned | None:
        import obstore

        def read() -> Versioned:
            result = obstore.get(self._store, key)
            data = bytes(result.bytes())
            meta = result.meta
            return Versioned(data, _version(meta), meta.get("last_modified"))

        try:
            found: Versioned = self._call(f"reading {key} from", read)
        except FileNotFoundError:
            return None
        return found

    def replace_bytes_if(self, key: str, data: bytes, version: str) -> str | None:
        import obstore

        # Only the fields the store gave: S3 and Azure match on the ETag,
        # GCS on the generation.
        stored = json.loads(version)
        mode: UpdateVersion = {}
        if stored.get("e_tag") is not None:
            mode["e_tag"] = stored["e_tag"]
        if stored.get("version") is not None:
            mode["version"] = stored["version"]
        return self._conditional(f"replacing {key} in",
                                 lambda: obstore.put(self._store, key, data, mode=mode))

    def delete_if(self, key: str, version: str) -> bool:
        # obstore has no conditional delete: compare, then delete. Only a
        # holder whose lease ran out can lose the race in between, and the
        # lock's holder never lets that happen while it runs.
        current = self.get_versioned(key)
        if current is None or current.version != version:
            return False
        self.delete(key)
        return True

    def _conditional(self, what: str, action: Callable[[], Any]) -> str | None:
        """Run a conditional put: its new version, or None when its condition failed."""
        from obstore.exceptions import AlreadyExistsError, NotSupportedError, PreconditionError

        try:
            result = action()
        except (AlreadyExistsError, PreconditionError):
            return None
        except NotSupportedError as exc:
            raise UsageError(f"{self.url} does not support conditional writes, which the "
                             f"lake's lock needs: {_first_line(exc, self.masked)}",
                             "use a store with conditional PUTs (S3, GCS, Azure, MinIO, R2)"
                             ) from None
        except Exception as exc:  # a missing bucket is a FileNotFoundError: an error here
            raise StoreError(f"{what} {self.url}: {_first_line(exc, self.masked)}") from None
        return _version(result)


def _version(meta: Any) -> str:
    """What a conditional put compares: the ETag and the version (GCS' generation)."""
    return json.dumps({"e_tag": meta.get("e_tag"), "version": meta.get("version")},
                      sort_keys=True)


def startup_error(error: OSError, url: str,
                  masked: Mapping[str, str] | None = None) -> MpexportError:
    """The error a user can act on, for a store that failed before anything was fetched.

    A missing bucket or wrong credentials so stop the run at once (exit 2 or
    3) instead of after the first chunk was fetched. ``masked``: the
    environment's secrets (the store's :attr:`ObjectStore.masked`), masked in
    the message.
    """
    text = redact(str(error), masked or {})
    lowered = text.lower()
    if isinstance(error, PermissionError) and not isinstance(error, StoreError):
        return UsageError(f"cannot read the Parquet output {url}: {text}",
                          "fix its permissions or choose another folder")
    if any(w in lowered for w in ("403 forbidden", "401 unauthorized", "accessdenied",
                                  "access denied", "signaturedoesnotmatch",
                                  "invalidaccesskeyid", "unauthenticated", "credential")):
        return CredentialsError(f"the lake refused access: {text}",
                                "check the AWS_*, GOOGLE_* or AZURE_* variables")
    if any(w in lowered for w in ("nosuchbucket", "containernotfound", "bucket does not exist",
                                  "404 not found")):
        return UsageError(f"the lake's bucket does not exist: {text}",
                          "create it first, or fix the URL")
    return UnavailableError(f"cannot reach the lake: {text}",
                            "check the endpoint and the network, then rerun")


def _first_line(error: BaseException, masked: Mapping[str, str]) -> str:
    """obstore's message without its debug dump, on one line, secrets masked."""
    text = str(error).split("\n\nDebug source:")[0]
    text = " ".join(text.split())
    if len(text) > 500:
        text = text[:500] + "…"
    return redact(text, masked) or type(error).__name__
