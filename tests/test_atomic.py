"""Replacing files: readers see old or new; devices, pipes and symlinks are respected."""

from __future__ import annotations

import datetime as dt
import os
import stat
import sys
import threading
from collections import Counter
from pathlib import Path

import pytest

from mpexport.atomic import in_place, write_atomically
from mpexport.fakeserver import Dataset
from tests.helpers import ServerFactory, run_cli

needs_fifo = pytest.mark.skipif(sys.platform == "win32" or not hasattr(os, "mkfifo"),
                                reason="named pipes are POSIX")


def _drain(fifo: Path, into: list[bytes]) -> threading.Thread:
    def read() -> None:
        with open(fifo, "rb") as handle:
            into.append(handle.read())

    thread = threading.Thread(target=read)
    thread.start()
    return thread


def test_a_symlink_stays_and_the_file_it_names_is_replaced(tmp_path: Path) -> None:
    real = tmp_path / "real.toml"
    real.write_bytes(b"old")
    link = tmp_path / "link.toml"
    link.symlink_to(real)
    write_atomically(link, b"new")
    assert link.is_symlink() and real.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.toml", "real.toml"]


@needs_fifo
def test_a_pipe_is_written_in_place_never_replaced(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    assert in_place(fifo) and not in_place(tmp_path / "missing") and not in_place(tmp_path)
    got: list[bytes] = []
    reader = _drain(fifo, got)
    write_atomically(fifo, b"summary\n")
    reader.join()
    assert got == [b"summary\n"]
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pipe"]


@needs_fifo
def test_output_into_a_pipe_streams_without_replacing_it(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    """`--output /dev/null` or a FIFO: written to, never swapped for a regular file."""
    dataset = Dataset(seed=21, events_per_day=15)
    server = make_server(dataset)
    fifo = tmp_path / "events.pipe"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = _drain(fifo, got)
    result = run_cli(["export", "--api-url", server.url, "--from", "2024-05-01", "--to",
                      "2024-05-02", "--output", str(fifo)])
    reader.join()
    assert result.code == 0, result.stderr
    expected = dataset.lines_for_range(dt.date(2024, 5, 1), dt.date(2024, 5, 2))
    assert Counter(got[0].splitlines(keepends=True)) == Counter(expected)
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
