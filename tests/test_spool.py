"""Spool folders: removed after the run, and those a killed run left are cleared at the next."""

from __future__ import annotations

import os
import time
from pathlib import Path

from mpexport.filelock import try_lock
from mpexport.spool import MARKER, PREFIX, UNMARKED_GRACE_SECONDS, clear_stale, spool_folder


def _left_by_killed_run(parent: Path, name: str, age: float = 3600.0) -> Path:
    folder = parent / f"{PREFIX}{name}"
    folder.mkdir()
    (folder / MARKER).write_bytes(b"")
    (folder / "chunk-0001.ndjson").write_bytes(b'{"event":"x"}\n')
    then = time.time() - age
    os.utime(folder / MARKER, (then, then))
    return folder


def test_a_folder_nobody_holds_is_cleared_and_a_live_one_kept(tmp_path: Path) -> None:
    stale = _left_by_killed_run(tmp_path, "dead")
    with spool_folder(tmp_path) as live:
        (live / "chunk-0002.ndjson").write_bytes(b"{}\n")
        # Another run starting now: the live folder's lock is held (by this
        # process's other open file description, as another process would).
        assert clear_stale(tmp_path) == []
        assert live.is_dir()
    assert not stale.exists()  # cleared when the live run started
    assert not live.exists()


def test_clear_stale_reports_only_abandoned_folders(tmp_path: Path) -> None:
    stale = _left_by_killed_run(tmp_path, "a")
    held = _left_by_killed_run(tmp_path, "b")
    unmarked_new = tmp_path / f"{PREFIX}c"
    unmarked_new.mkdir()
    unmarked_old = tmp_path / f"{PREFIX}d"
    unmarked_old.mkdir()
    old = time.time() - UNMARKED_GRACE_SECONDS - 60
    os.utime(unmarked_old, (old, old))
    other = tmp_path / "not-ours"
    other.mkdir()
    # A run that created its marker a moment ago and is about to lock it.
    starting = _left_by_killed_run(tmp_path, "e", age=1.0)
    with open(held / MARKER, "r+b") as handle:
        assert try_lock(handle)
        removed = clear_stale(tmp_path)
    assert sorted(removed) == sorted([stale, unmarked_old])
    assert held.is_dir() and unmarked_new.is_dir() and other.is_dir() and starting.is_dir()
