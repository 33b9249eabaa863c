"""The run's spool folder: where chunks wait on disk, and what earlier runs left behind.

A run's folder holds a lock on its ``.in-use`` marker for as long as the run
lives, so a later run can tell a folder in use from one a killed run left
(Windows cannot even delete a file that is still open, so leftovers are
common there): a marker whose lock can be taken belongs to nobody.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from mpexport.filelock import try_lock, unlock

log = logging.getLogger(__name__)

PREFIX = "mpexport-spool-"
MARKER = ".in-use"
# A folder without a marker (a run killed before it wrote one) is left alone
# for this long, so a run that is just starting is never disturbed.
UNMARKED_GRACE_SECONDS = 24 * 3600
# A run creates its marker a moment before it locks it: a marker younger than
# this is never judged, so a run starting at the same second is left alone.
STARTING_GRACE_SECONDS = 300


@contextlib.contextmanager
def spool_folder(parent: Path | None = None) -> Iterator[Path]:
    """A fresh spool folder under ``parent`` (the temp dir), removed on the way out.

    Folders earlier runs left under the same parent are removed first.
    """
    base = Path(parent) if parent is not None else Path(tempfile.gettempdir())
    clear_stale(base)
    path = Path(tempfile.mkdtemp(prefix=PREFIX, dir=base))
    marker = open(path / MARKER, "a+b")  # noqa: SIM115 - held for the run, closed below
    try:
        try_lock(marker)
        yield path
    finally:
        with contextlib.suppress(OSError):
            unlock(marker)
        marker.close()
        shutil.rmtree(path, ignore_errors=True)


def clear_stale(parent: Path, now: float | None = None) -> list[Path]:
    """Remove spool folders under ``parent`` that no live run holds; return them."""
    now = time.time() if now is None else now
    removed = []
    for folder in sorted(parent.glob(PREFIX + "*")):
        if folder.is_dir() and _abandoned(folder, now):
            shutil.rmtree(folder, ignore_errors=True)
            if not folder.exists():
                removed.append(folder)
    if removed:
        log.info("removed %d spool folders earlier runs left in %s", len(removed), parent)
    return removed


def _abandoned(folder: Path, now: float) -> bool:
    marker = folder / MARKER
    try:
        handle = open(marker, "r+b")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        try:
            return now - folder.stat().st_mtime > UNMARKED_GRACE_SECONDS
        except OSError:
            return False
    except OSError:
        return False  # unreadable or held open exclusively: not ours to judge
    with handle:
        try:
            if now - os.fstat(handle.fileno()).st_mtime < STARTING_GRACE_SECONDS:
                return False  # possibly a run between creating and locking it
        except OSError:
            return False
        if not try_lock(handle):
            return False  # a live run holds it
        unlock(handle)
        return True
