"""The executable's hashed lock (packaging/requirements-exe.txt) and what builds from it.

A dependency added to pyproject.toml without `make lock` fails here (and stops
packaging/build_exe.sh), and so does a lock line without an exact pin or hashes.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import sys
import tomllib
from pathlib import Path
from types import ModuleType

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "packaging" / "requirements-exe.txt"
WORKFLOWS = ROOT / ".github" / "workflows"

# The marker environments of the platforms the workflows build, Python 3.11.
TARGETS = {
    "linux-x86_64": {"sys_platform": "linux", "platform_system": "Linux", "os_name": "posix",
                     "platform_machine": "x86_64"},
    "windows-x64": {"sys_platform": "win32", "platform_system": "Windows", "os_name": "nt",
                    "platform_machine": "AMD64"},
    "macos-arm64": {"sys_platform": "darwin", "platform_system": "Darwin", "os_name": "posix",
                    "platform_machine": "arm64"},
}
PY311 = {"python_version": "3.11", "python_full_version": "3.11.9",
         "implementation_name": "cpython", "platform_python_implementation": "CPython"}


def _lock_exe() -> ModuleType:
    spec = importlib.util.spec_from_file_location("lock_exe", ROOT / "scripts" / "lock_exe.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("lock_exe", module)
    spec.loader.exec_module(module)
    return module


def _entries() -> list[tuple[Requirement, list[str]]]:
    """Each locked requirement with its hashes (a line and its `\\` continuations)."""
    entries: list[tuple[Requirement, list[str]]] = []
    for line in LOCK.read_text(encoding="utf-8").splitlines():
        if re.match(r"[A-Za-z0-9]", line):
            entries.append((Requirement(line.rstrip(" \\")), []))
        elif line.strip().startswith("--hash="):
            assert entries, line
            entries[-1][1].append(line.strip().rstrip(" \\").removeprefix("--hash="))
        else:
            assert line.strip() == "" or line.lstrip().startswith("#"), f"unexpected: {line!r}"
    return entries


def _applies(requirement: Requirement, target: str) -> bool:
    if requirement.marker is None:
        return True
    return requirement.marker.evaluate({**PY311, **TARGETS[target], "extra": "lake"})


def _runtime_requirements() -> list[Requirement]:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    lines = [
        *pyproject["project"]["dependencies"],
        *pyproject["project"]["optional-dependencies"]["lake"],
        *pyproject["build-system"]["requires"],
    ]
    extra_in = (ROOT / "packaging" / "requirements-exe.in").read_text(encoding="utf-8")
    lines += [line for line in extra_in.splitlines() if line.strip() and line[0] != "#"]
    return [Requirement(line) for line in lines]


def test_the_lock_is_current() -> None:
    """Its recorded digest is that of today's dependency lists: else `make lock`."""
    assert _lock_exe().problems() == []


def test_a_dependency_added_without_relocking_is_caught(tmp_path: Path) -> None:
    names = ("pyproject.toml", "packaging/requirements-exe.in", "packaging/requirements-exe.txt")
    for name in names:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, tmp_path / name)
    pyproject = tmp_path / "pyproject.toml"
    text = pyproject.read_text(encoding="utf-8")
    added = text.replace('    "click>=8.1",\n', '    "click>=8.1",\n    "rich>=13",\n')
    assert added != text
    pyproject.write_text(added, encoding="utf-8")
    found = _lock_exe().problems(tmp_path)
    assert any("stale" in problem and "make lock" in problem for problem in found), found
    assert any("'rich>=13'" in problem for problem in found), found
    (tmp_path / "packaging/requirements-exe.txt").unlink()
    assert _lock_exe().problems(tmp_path) == [
        "packaging/requirements-exe.txt is missing; run `make lock`"
    ]


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_every_runtime_dependency_is_locked_at_a_version_it_allows(target: str) -> None:
    locked = {canonicalize_name(req.name): req for req, _ in _entries() if _applies(req, target)}
    for wanted in _runtime_requirements():
        if not _applies(wanted, target):
            continue
        name = canonicalize_name(wanted.name)
        assert name in locked, f"{wanted} is not locked for {target}: run `make lock`"
        (pin,) = locked[name].specifier
        assert wanted.specifier.contains(pin.version, prereleases=True), (wanted, pin)
    # The platform-only packages are there for their platform alone.
    assert ("tzdata" in locked) == (target == "windows-x64")


def test_every_lock_line_is_an_exact_pin_with_sha256_hashes() -> None:
    entries = _entries()
    names = [canonicalize_name(req.name) for req, _ in entries]
    assert len(names) == len(set(names))
    assert "pyinstaller" in names and "setuptools" in names
    assert "mpexport" not in names  # installed from the tree with --no-deps
    for requirement, hashes in entries:
        assert requirement.url is None and not requirement.extras, requirement
        (pin,) = requirement.specifier
        assert pin.operator == "==" and "*" not in pin.version, requirement
        assert hashes, f"{requirement} has no hash"
        assert all(re.fullmatch(r"sha256:[0-9a-f]{64}", h) for h in hashes), hashes


def test_build_exe_installs_the_lock_with_hashes_and_nothing_from_the_index() -> None:
    script = (ROOT / "packaging" / "build_exe.sh").read_text(encoding="utf-8")
    assert "scripts/lock_exe.py check" in script
    assert "--require-hashes --only-binary :all: --no-deps -r \"$lock\"" in script
    assert "--no-deps --no-build-isolation ." in script
    assert "--upgrade" not in script and "pyinstaller>=" not in script


@pytest.mark.parametrize("workflow", sorted(p.name for p in WORKFLOWS.glob("*.yml")))
def test_artifacts_are_uploaded_only_after_the_frozen_tests_passed(workflow: str) -> None:
    """Steps run in order and stop at the first failure; an `if:` could override that.

    The checks: the frozen tests for the executables, `make dist` (twine
    check, a clean install running the command) for the sdist and wheel.
    """
    text = (WORKFLOWS / workflow).read_text(encoding="utf-8")
    steps = re.split(r"\n(?=\s+- (?:uses|name|run):)", text)
    uploads = [i for i, step in enumerate(steps) if "actions/upload-artifact@" in step]
    if not uploads:
        pytest.skip("uploads nothing")
    tests = [i for i, step in enumerate(steps)
             if "run_frozen_tests.sh" in step or "run: make dist" in step]
    assert tests and all(i > max(tests) for i in uploads)
    for i in uploads:
        assert not re.search(r"^\s+if:", steps[i], re.M), steps[i]
        assert "if-no-files-found: error" in steps[i], steps[i]
