"""packaging/release.py: the tag check, the archives of the builds, SHA256SUMS."""

from __future__ import annotations

import hashlib
import importlib.util
import stat
import sys
import tarfile
import zipfile
from pathlib import Path
from types import ModuleType

import pytest

from mpexport.version import __version__

ROOT = Path(__file__).resolve().parent.parent


def load_release() -> ModuleType:
    spec = importlib.util.spec_from_file_location("release", ROOT / "packaging" / "release.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


release = load_release()


def test_the_version_is_read_from_the_package_without_importing_it() -> None:
    assert release.package_version() == __version__


def test_the_tag_must_be_v_and_the_version() -> None:
    assert release.check_tag(f"v{__version__}", __version__) is None
    for tag in (__version__, f"v{__version__}.1", "v0.0.0", f"release-{__version__}"):
        problem = release.check_tag(tag, __version__)
        assert problem is not None and repr(tag) in problem and __version__ in problem
    assert release.main(["version", "--tag", "v0.0.0-not-it"]) == 1


def fake_build(dist: Path, version: str) -> None:
    """A onedir folder and a onefile that answer --version as the real ones do."""
    script = f"#!{sys.executable}\nprint('mpexport {version} (Python 3, duckdb 1)')\n"
    (dist / "mpexport" / "_internal").mkdir(parents=True)
    (dist / "mpexport" / "_internal" / "lib.so").write_bytes(b"\0lib")
    for exe in (dist / "mpexport" / "mpexport", dist / "mpexport-onefile"):
        exe.write_text(script)
        exe.chmod(0o755)


@pytest.mark.skipif(sys.platform == "win32", reason="the fake builds are POSIX scripts")
def test_archives_keep_the_folder_and_the_executable_bit(tmp_path: Path) -> None:
    dist, out = tmp_path / "dist", tmp_path / "release"
    fake_build(dist, __version__)
    made = release.archive("linux-x86_64", dist, out, {"onedir", "onefile"})
    stem = f"mpexport-{__version__}-linux-x86_64"
    assert [p.name for p in made] == [f"{stem}.tar.gz", f"{stem}-onefile.tar.gz"]
    with tarfile.open(made[0]) as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert {f"{stem}/mpexport", f"{stem}/_internal/lib.so"} <= set(members)
        assert members[f"{stem}/mpexport"].mode & stat.S_IXUSR
        assert members[f"{stem}/mpexport"].uname == ""
    with tarfile.open(made[1]) as tar:
        assert tar.getnames() == ["mpexport"]


@pytest.mark.skipif(sys.platform == "win32", reason="the fake builds are POSIX scripts")
def test_a_build_of_another_version_is_not_archived(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    fake_build(dist, "0.0.0")
    with pytest.raises(SystemExit, match="not mpexport"):
        release.archive("linux-x86_64", dist, tmp_path / "release", set())


def test_a_required_build_that_is_missing_fails(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="not built"):
        release.archive("macos-arm64", tmp_path, tmp_path / "release", {"onefile"})


def test_sha256sums_lists_every_file_in_the_sha256sum_format(tmp_path: Path) -> None:
    (tmp_path / "b.zip").write_bytes(b"bb")
    (tmp_path / "a.tar.gz").write_bytes(b"a")
    (tmp_path / "SHA256SUMS").write_text("stale\n")
    sums = release.write_sums(tmp_path)
    assert sums.read_bytes() == (
        f"{hashlib.sha256(b'a').hexdigest()}  a.tar.gz\n"
        f"{hashlib.sha256(b'bb').hexdigest()}  b.zip\n").encode()


def test_zip_archives_hold_the_folder(tmp_path: Path) -> None:
    folder = tmp_path / "mpexport"
    (folder / "_internal").mkdir(parents=True)
    (folder / "mpexport.exe").write_bytes(b"MZ")
    (folder / "_internal" / "x.dll").write_bytes(b"dll")
    out = tmp_path / "a.zip"
    release.pack_zip(out, [(folder, "mpexport-1.0.0-windows-x64")])
    with zipfile.ZipFile(out) as zf:
        assert sorted(zf.namelist()) == ["mpexport-1.0.0-windows-x64/_internal/",
                                         "mpexport-1.0.0-windows-x64/_internal/x.dll",
                                         "mpexport-1.0.0-windows-x64/mpexport.exe"]
