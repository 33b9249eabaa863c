"""The lake's own manifest, ``_mpexport/manifest.json``: which days it holds, and how.

One entry per UTC day: the rows of the day's Parquet file when it was last
written, the filters the day was fetched whole with (Mixpanel's query
filters: a day fetched with ``--event Purchase`` holds no other events),
the run that wrote it and when. A rerun skips the days it holds with the same
filters, and ``sync --parquet`` starts from them, as ``--db`` does from its
table's manifest.

It also records, per filters fingerprint, the first day a sync was asked to
cover (``sync_from``): where the lake's range begins, even where its first
days hold no events.

It is written after the day files it describes, as one object, so a crash in
between only makes the next run fetch those days again. Each write reads the
stored manifest and merges this run's records into it (under the lake's
lock, :mod:`mpexport.sinks.lake.lock`), so no run drops another's entries. Engines skip it:
Spark, Trino, Hive and pyarrow ignore paths starting with ``_``, and a glob of
``*/*.parquet`` never matches it.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from mpexport.errors import UsageError
from mpexport.sinks.lake.store import Store
from mpexport.version import __version__

MANIFEST_KEY = "_mpexport/manifest.json"
FORMAT = 1


def _fingerprint(filters: Any) -> str:
    # The same text as QueryFilters.fingerprint(): manifests compare on it.
    return json.dumps(filters, sort_keys=True, separators=(",", ":"))


@dataclass
class DayEntry:
    """What the lake holds of one UTC day."""

    rows: int | None = None  # rows of the day's file (0: no file); None: never written
    filters: list[str] = field(default_factory=list)  # fingerprints it was fetched whole with
    run_id: str | None = None
    written_at: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"rows": self.rows, "filters": [json.loads(f) for f in self.filters],
                "run_id": self.run_id, "written_at": self.written_at}


@dataclass
class LakeManifest:
    """The manifest of one lake; ``changed`` says it differs from the stored one."""

    days: dict[dt.date, DayEntry] = field(default_factory=dict)
    changed: bool = False
    # Per filters fingerprint: the first day a sync of the lake was asked to cover.
    sync_from: dict[str, dt.date] = field(default_factory=dict)

    @classmethod
    def from_bytes(cls, data: bytes | None, where: str) -> LakeManifest:
        """Parse a stored manifest (None: the lake has none yet)."""
        if data is None:
            return cls()
        hint = f"delete {MANIFEST_KEY} in the lake to fetch its days again"
        try:
            raw = json.loads(data)
            if raw.get("format") != FORMAT:
                raise UsageError(
                    f"the manifest of {where} has format {raw.get('format')!r}, "
                    f"this mpexport reads format {FORMAT}",
                    "upgrade mpexport, or write to another prefix",
                )
            days = {
                dt.date.fromisoformat(day): DayEntry(
                    rows=None if entry.get("rows") is None else int(entry["rows"]),
                    filters=sorted({_fingerprint(f) for f in entry.get("filters", [])}),
                    run_id=entry.get("run_id"),
                    written_at=entry.get("written_at"),
                )
                for day, entry in raw["days"].items()
            }
            # Manifests written before sync ranges were recorded have none.
            sync_from = {
                _fingerprint(json.loads(key)): dt.date.fromisoformat(day)
                for key, day in raw.get("sync_from", {}).items()
            }
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise UsageError(f"the manifest of {where} is damaged: {exc}", hint) from None
        return cls(days, sync_from=sync_from)

    def to_bytes(self) -> bytes:
        """The stored form: JSON with one line per day, in order (small, and readable)."""
        head = json.dumps({"format": FORMAT, "written_by": f"mpexport {__version__}"})
        days = ",\n".join(
            f" {json.dumps(day.isoformat())}: "
            f"{json.dumps(self.days[day].to_json(), ensure_ascii=False, separators=(',', ':'))}"
            for day in sorted(self.days)
        )
        body = f"{{\n{days}\n}}" if days else "{}"
        if self.sync_from:
            ranges = json.dumps({k: v.isoformat() for k, v in sorted(self.sync_from.items())},
                                ensure_ascii=False)
            head = f'{head[:-1]}, "sync_from": {ranges}}}'
        return f'{head[:-1]}, "days": {body}}}\n'.encode()

    def covered(self) -> dict[str, set[dt.date]]:
        """The days fetched whole, per filters fingerprint (as the DuckDB manifest gives them)."""
        result: dict[str, set[dt.date]] = {}
        for day, entry in self.days.items():
            for fingerprint in entry.filters:
                result.setdefault(fingerprint, set()).add(day)
        return result

    def day_volumes(self) -> dict[dt.date, int]:
        """Events per day, for planning chunks."""
        return {day: e.rows for day, e in self.days.items() if e.rows is not None}

    def wrote(self, day: dt.date, rows: int, run_id: str, when: dt.datetime) -> None:
        """Record that the day's file was written with ``rows`` rows (0: removed)."""
        entry = self.days.setdefault(day, DayEntry())
        entry.rows, entry.run_id, entry.written_at = rows, run_id, _stamp(when)
        self.changed = True

    def cover(self, days: Iterable[dt.date], fingerprint: str, run_id: str,
              when: dt.datetime) -> None:
        """Record that ``days`` were fetched whole with the filters of ``fingerprint``."""
        for day in days:
            entry = self.days.setdefault(day, DayEntry())
            if fingerprint not in entry.filters:
                entry.filters = sorted([*entry.filters, fingerprint])
            if entry.run_id != run_id:
                entry.run_id, entry.written_at = run_id, _stamp(when)
            self.changed = True


    def record_sync_from(self, fingerprint: str, day: dt.date) -> None:
        """Record that a sync with the filters of ``fingerprint`` was asked to start at ``day``."""
        self.sync_from[fingerprint] = day
        self.changed = True

    def absorb(self, changes: LakeManifest) -> None:
        """Merge one run's records (``changes``) into this manifest, read from the store.

        A day the run wrote takes the run's row count; the filters a day was
        fetched whole with are the union of both; a sync's range is the run's.
        """
        for day, mine in changes.days.items():
            entry = self.days.setdefault(day, DayEntry())
            if mine.rows is not None:
                entry.rows = mine.rows
            entry.filters = sorted(set(entry.filters) | set(mine.filters))
            if mine.run_id is not None:
                entry.run_id, entry.written_at = mine.run_id, mine.written_at
        self.sync_from.update(changes.sync_from)
        self.changed = self.changed or changes.changed


def _stamp(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def read_manifest(store: Store) -> LakeManifest:
    """The lake's manifest (empty when it has none)."""
    return LakeManifest.from_bytes(store.get_bytes(MANIFEST_KEY), store.url)


def write_manifest(store: Store, manifest: LakeManifest) -> None:
    """Store the manifest as one object (replaced whole), then mark it unchanged."""
    store.put_bytes(MANIFEST_KEY, manifest.to_bytes())
    manifest.changed = False


def update_manifest(store: Store, changes: LakeManifest) -> LakeManifest:
    """Read the stored manifest, merge ``changes`` into it, store it; return the result.

    ``changes`` holds every record of one run so far (merging it again is
    harmless) and is marked unchanged once stored.
    """
    merged = read_manifest(store)
    merged.absorb(changes)
    write_manifest(store, merged)
    changes.changed = False
    return merged
