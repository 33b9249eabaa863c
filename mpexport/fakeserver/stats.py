"""What the fake server saw and did, for assertions in tests.

Credentials are never recorded: a record holds the path and query parameters only.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field, replace


@dataclass
class RequestRecord:
    """One request. Fields are final before the response's last byte is written."""

    arrival: float
    path: str
    params: dict[str, str]
    status: int = 0
    fault: str | None = None
    error: str | None = None
    gzip: bool = False
    lines_sent: int = 0
    bytes_sent: int = 0
    # The kind of credential sent (request.auth_kind), right or wrong: never its value.
    auth: str = ""


@dataclass
class ServerStats:
    """Thread-safe request log with counting helpers."""

    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _records: list[RequestRecord] = field(default_factory=list)

    def add(self, record: RequestRecord) -> RequestRecord:
        """Append ``record`` (it may still be updated in place by its handler)."""
        with self._lock:
            self._records.append(record)
        return record

    def records(self) -> list[RequestRecord]:
        """A snapshot copy of all records, in arrival order."""
        with self._lock:
            return [replace(r, params=dict(r.params)) for r in self._records]

    def count(self, status: int | None = None, fault: str | None = None) -> int:
        """Number of requests matching ``status`` and ``fault`` (None matches any)."""
        return sum(
            1
            for r in self.records()
            if (status is None or r.status == status) and (fault is None or r.fault == fault)
        )

    def queries(self) -> list[dict[str, str]]:
        """Query parameters of every request to the export endpoint, in arrival order."""
        return [r.params for r in self.records() if r.path.rstrip("/") == "/api/2.0/export"]

    def total_bytes(self) -> int:
        """Body bytes sent over all requests (after compression, before chunk framing)."""
        return sum(r.bytes_sent for r in self.records())

    def clear(self) -> None:
        """Forget all records."""
        with self._lock:
            self._records.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._records)
