"""What the loader needs of what lies beyond its database: a day writer, a record of what is held.

The DuckDB sink loads chunks into a database, the user's (``--db``) or a
scratch one (the lake alone). These interfaces let the pieces that publish
its days (:mod:`mpexport.sinks.lake`) plug in without the loader importing
them: the lake builds on the loader, never the reverse.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any, Protocol

from mpexport.model import Chunk


class DayWriter(Protocol):
    """Publishes the UTC days the loader committed (a Parquet copy, the lake).

    Every call comes from the loader thread with its connection, whose
    pending-days table (``track_days``) lists what is still to write.
    """

    @property
    def written(self) -> set[dt.date]:
        """The days whose file this run wrote (or removed)."""
        ...

    @property
    def deferred(self) -> list[Path]:
        """Files that were in use and stay pending for the next run."""
        ...

    def prepare(self, con: Any, chunk: Chunk) -> None:
        """Before ``chunk`` loads (the lake reads back the days it holds of it)."""
        ...

    def flush(self, con: Any, chunk: Chunk | None = None) -> None:
        """Write the pending days: after ``chunk``'s commit, or (``None``) once opened.

        Raises :class:`~mpexport.errors.LoaderError` when that fails.
        """
        ...


class HeldDays(Protocol):
    """What is held when the loader's database is a scratch one: the lake's record, not its own."""

    def covered(self) -> dict[str, set[dt.date]]:
        """Days held whole, per filters fingerprint."""
        ...

    def day_volumes(self) -> dict[dt.date, int]:
        """Events per held day, for planning."""
        ...
