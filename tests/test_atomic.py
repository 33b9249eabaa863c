"""Replacing files: readers see old or new; devices, pipes and symlinks are respected."""

from __future__ import annotations

import datetime as dt
import os
import stat
import sys
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from mpexport import atomic
from mpexport.atomic import in_place, write_atomically
from mpexport.errors import UsageError
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


# ------------------------------------------------------------------ a file someone else holds


def sharing_violation(path: Path) -> PermissionError:
    """What Windows raises when another program has ``path`` open (winerror 32)."""
    error = PermissionError(13, "The process cannot access the file", str(path))
    error.winerror = 32  # type: ignore[attr-defined]  # the constructor's, on Windows
    return error


class Held:
    """``os.replace`` refused ``times`` times as Windows refuses a held file, then done."""

    def __init__(self, times: int, error: Callable[[Path], OSError] = sharing_violation) -> None:
        self.left = times
        self.error = error
        self.attempts = 0
        self.real = os.replace

    def __call__(self, src: object, dst: object) -> None:
        self.attempts += 1
        if self.left > 0:
            self.left -= 1
            raise self.error(Path(str(dst)))
        self.real(str(src), str(dst))


def test_a_held_file_is_replaced_once_the_holder_lets_go(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    held = Held(2)
    pauses: list[float] = []
    monkeypatch.setattr(os, "replace", held)
    monkeypatch.setattr(atomic, "_pause", pauses.append)
    target = tmp_path / "summary.json"
    target.write_bytes(b"old")
    write_atomically(target, b"new")
    assert target.read_bytes() == b"new"
    assert held.attempts == 3 and pauses == [0.05, 0.1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]


def test_a_file_held_throughout_fails_after_a_few_seconds_and_is_untouched(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    held = Held(100)
    pauses: list[float] = []
    monkeypatch.setattr(os, "replace", held)
    monkeypatch.setattr(atomic, "_pause", pauses.append)
    target = tmp_path / "summary.json"
    target.write_bytes(b"old")
    with pytest.raises(PermissionError) as failed:
        write_atomically(target, b"new")
    assert getattr(failed.value, "winerror", None) == 32
    assert pauses == [0.05, 0.1, 0.2, 0.4, 0.8, 1.6] == list(atomic.BACKOFF_SECONDS)
    assert sum(pauses) == pytest.approx(3.15)
    assert held.attempts == 7
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]


def test_a_denied_file_is_not_retried(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A permission (no winerror; POSIX) is no held file: no wait helps, it fails at once."""
    held = Held(100, lambda p: PermissionError(13, "Permission denied", str(p)))
    pauses: list[float] = []
    monkeypatch.setattr(os, "replace", held)
    monkeypatch.setattr(atomic, "_pause", pauses.append)
    with pytest.raises(PermissionError):
        write_atomically(tmp_path / "summary.json", b"new")
    assert held.attempts == 1 and pauses == []


def test_patiently_takes_its_sleep_and_backoff() -> None:
    attempts: list[int] = []
    pauses: list[float] = []

    def delete() -> str:
        attempts.append(1)
        if len(attempts) < 3:
            raise sharing_violation(Path("day.parquet"))
        return "gone"

    assert atomic.patiently(delete, Path("day.parquet"), sleep=pauses.append,
                            backoff=(0.5, 0.25, 0.125)) == "gone"
    assert pauses == [0.5, 0.25] and len(attempts) == 3


# ------------------------------------------------------------------ links in a shared folder


@pytest.fixture
def sticky(tmp_path: Path) -> Path:
    """A folder like /tmp: world-writable and sticky."""
    folder = tmp_path / "shared"
    folder.mkdir()
    os.chmod(folder, 0o1777)
    return folder


needs_root = pytest.mark.skipif(os.name != "posix" or os.geteuid() != 0,
                                reason="giving a link to another user takes root")
OTHER_UID = 54321


@needs_root
def test_a_link_another_user_planted_in_a_sticky_folder_is_refused(
    sticky: Path, tmp_path: Path
) -> None:
    victim = tmp_path / "precious.txt"
    victim.write_bytes(b"mine")
    link = sticky / "summary.json"
    link.symlink_to(victim)
    os.lchown(link, OTHER_UID, OTHER_UID)
    with pytest.raises(UsageError) as refused:
        write_atomically(link, b"{}")
    assert refused.value.exit_code == 2
    assert refused.value.message == (
        f"refusing to write {link}: {link} is a symbolic link owned by another user "
        f"(uid {OTHER_UID}) in the shared folder {sticky}")
    assert victim.read_bytes() == b"mine"
    assert sorted(p.name for p in sticky.iterdir()) == ["summary.json"]


@needs_root
def test_the_second_link_of_a_chain_is_checked_too(sticky: Path, tmp_path: Path) -> None:
    victim = tmp_path / "precious.txt"
    victim.write_bytes(b"mine")
    planted = sticky / "planted"
    planted.symlink_to(victim)
    os.lchown(planted, OTHER_UID, OTHER_UID)
    mine = tmp_path / "mine.json"
    mine.symlink_to(planted)  # a link of one's own, outside: followed, to the planted one
    with pytest.raises(UsageError, match="planted is a symbolic link owned by another user"):
        write_atomically(mine, b"{}")
    assert victim.read_bytes() == b"mine"


@needs_root
def test_links_that_cannot_redirect_anything_are_followed(sticky: Path, tmp_path: Path) -> None:
    """One's own link there; another user's link in a folder only its owner may change."""
    own_target = tmp_path / "own.json"
    own = sticky / "own.json"
    own.symlink_to(own_target)
    write_atomically(own, b"1")
    assert own.is_symlink() and own_target.read_bytes() == b"1"

    private = tmp_path / "private"
    private.mkdir(mode=0o755)
    theirs_target = tmp_path / "theirs.json"
    theirs = private / "theirs.json"
    theirs.symlink_to(theirs_target)
    os.lchown(theirs, OTHER_UID, OTHER_UID)
    write_atomically(theirs, b"2")
    assert theirs_target.read_bytes() == b"2"


# ------------------------------------------------------------------ stale temp files


def test_a_temp_name_says_whose_it_is(tmp_path: Path) -> None:
    name = atomic.temp_sibling(tmp_path / "out.ndjson").name
    pid, host, random = name[len(".out.ndjson."):-len(".tmp")].split("-")
    assert name.startswith(".out.ndjson.") and name.endswith(".tmp")
    assert pid == str(os.getpid()) and host == atomic._host_tag() and len(random) == 12
    assert atomic.temp_sibling(tmp_path / "out.ndjson").name != name


def test_only_the_temp_files_of_gone_writers_are_swept(tmp_path: Path) -> None:
    target = tmp_path / "out.ndjson"
    here = atomic._host_tag()
    now = 1_700_000_000.0
    week = atomic.FOREIGN_STALE_SECONDS

    def make(name: str, age: float = 0.0) -> Path:
        path = tmp_path / name
        path.write_bytes(b"x")
        os.utime(path, (now - age, now - age))
        return path

    dead = make(f".out.ndjson.4001-{here}-0123456789ab.tmp")
    live = make(f".out.ndjson.4002-{here}-0123456789ab.tmp", age=2 * week)
    own = make(f".out.ndjson.{os.getpid()}-{here}-0123456789ab.tmp", age=2 * week)
    elsewhere = make(".out.ndjson.4001-abcdef-0123456789ab.tmp", age=week - 1)
    elsewhere_old = make(".out.ndjson.4001-abcdef-ba9876543210.tmp", age=week)
    older_format = make(".out.ndjson.0123456789abcdef.tmp", age=week - 1)
    older_format_old = make(".out.ndjson.fedcba9876543210.tmp", age=week)
    unrelated = [make(".out.ndjson.notes.tmp", age=2 * week), make("out.ndjson", age=2 * week),
                 make(f".other.ndjson.4001-{here}-0123456789ab.tmp", age=2 * week)]
    (tmp_path / f".out.ndjson.4003-{here}-0123456789ab.tmp").mkdir()

    asked: list[int] = []

    def alive(pid: int) -> bool:
        asked.append(pid)
        return pid == 4002

    removed = atomic.sweep_stale_temps(target, now=now, alive=alive)
    assert sorted(removed) == sorted([dead, elsewhere_old, older_format_old])
    assert sorted(asked) == [4001, 4002]
    for kept in (live, own, elsewhere, older_format, *unrelated):
        assert kept.exists(), kept.name
    assert (tmp_path / f".out.ndjson.4003-{here}-0123456789ab.tmp").is_dir()


def test_a_dead_process_is_not_alive_and_this_one_is() -> None:
    import subprocess

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert atomic.process_alive(os.getpid())
    assert not atomic.process_alive(child.pid)


def test_a_replace_sweeps_what_a_killed_run_left(tmp_path: Path) -> None:
    here = atomic._host_tag()
    left = tmp_path / f".summary.json.999999999-{here}-0123456789ab.tmp"
    left.write_bytes(b"{half")
    write_atomically(tmp_path / "summary.json", b"{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]
