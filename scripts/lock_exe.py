"""The executable's hashed lock: packaging/requirements-exe.txt.

packaging/build_exe.sh installs the executable's build venv from that file
alone (`pip install --require-hashes --only-binary :all: --no-deps`), then
mpexport from the tree with `--no-deps`. The lock holds mpexport's runtime
dependencies with the lake's (pyproject.toml, `.[lake]`) and what
packaging/requirements-exe.in adds (PyInstaller, the build backend), each at
one exact version with the sha256 of every wheel that Linux x86_64, Windows
x64 or macOS arm64 (Python 3.11) may pick; platform-only packages (tzdata,
colorama, pefile, pywin32-ctypes, macholib) carry environment markers.

    python3 scripts/lock_exe.py compile [UV ARGS...]   make lock / make lock-upgrade
    python3 scripts/lock_exe.py check                  is the lock there and current?
    python3 scripts/lock_exe.py verify                 does it install on every target?

`compile` resolves with uv (`uv pip compile --universal --generate-hashes`:
one resolution for every platform, markers included), which it installs
into a venv outside the repository (MPEXPORT_LOCK_VENV, default
~/.cache/mpexport/lock-tools; MPEXPORT_UV, default the pinned release below).
It keeps the versions already locked unless told otherwise (`--upgrade`,
`--upgrade-package NAME`), writes the header below, then runs `verify`.

The header records `inputs-sha256`: a digest of pyproject.toml's dependency
lists (dependencies, the lake extra, build-system.requires), of
packaging/requirements-exe.in and of the targets. `check` (run by
build_exe.sh, and by tests/test_exe_lock.py) fails when they changed since
the lock was made: a dependency added without `make lock` stops the build.

`verify` installs the lock into a scratch folder for each target platform
with uv (`--require-hashes --only-binary :all: --python-platform ...`): every
wheel is downloaded and its hash checked, and a dependency of a locked
package that the lock lacks (on that platform) fails. Standard library only,
apart from uv.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCK = "packaging/requirements-exe.txt"
INPUT = "packaging/requirements-exe.in"
PYTHON_VERSION = "3.11"
# The platforms the workflows build on, as uv names them (--python-platform).
TARGETS = {
    "linux-x86_64": "x86_64-manylinux_2_28",
    "windows-x64": "x86_64-pc-windows-msvc",
    "macos-arm64": "aarch64-apple-darwin",
}
UV_REQUIREMENT = os.environ.get("MPEXPORT_UV", "uv==0.13.10")
DIGEST_LINE = re.compile(r"^# inputs-sha256: ([0-9a-f]{64})$", re.M)
HEADER = """\
# The executable's build environment: mpexport's runtime dependencies with the
# lake's and PyInstaller, for Python {python} on {targets}.
# packaging/build_exe.sh installs it with `pip install --require-hashes`.
# Generated, never edited by hand: `make lock` (keeps the versions, re-resolves
# what changed) or `make lock-upgrade` (the newest releases); see
# packaging/README.md.
# inputs-sha256: {digest}
"""


def canonical(name: str) -> str:
    """A distribution name as pip compares it (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> str:
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    if not match:
        raise ValueError(f"not a requirement: {requirement!r}")
    return canonical(match.group(1))


def inputs(root: Path = ROOT) -> dict[str, list[str]]:
    """What the lock is resolved from (what the digest covers)."""
    pyproject = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))
    project = pyproject["project"]
    extra_lines = [
        line.strip()
        for line in (root / INPUT).read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    return {
        "python": [PYTHON_VERSION],
        "targets": sorted(TARGETS.values()),
        "dependencies": list(project.get("dependencies", [])),
        "lake": list(project.get("optional-dependencies", {}).get("lake", [])),
        "build-system": list(pyproject.get("build-system", {}).get("requires", [])),
        "requirements-exe.in": extra_lines,
    }


def inputs_digest(root: Path = ROOT) -> str:
    text = json.dumps(inputs(root), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def locked_names(lock_text: str) -> set[str]:
    """Every distribution the lock pins (whatever its marker)."""
    lines = lock_text.splitlines()
    return {requirement_name(line) for line in lines if re.match(r"[A-Za-z0-9]", line)}


def problems(root: Path = ROOT) -> list[str]:
    """Why the lock cannot be built from as it is (empty: it can)."""
    lock = root / LOCK
    if not lock.is_file():
        return [f"{LOCK} is missing; run `make lock`"]
    text = lock.read_text(encoding="utf-8")
    found = []
    match = DIGEST_LINE.search(text)
    if not match:
        found.append(f"{LOCK} has no '# inputs-sha256:' line; run `make lock`")
    elif match.group(1) != inputs_digest(root):
        found.append(
            f"{LOCK} is stale: pyproject.toml's dependencies or {INPUT} changed since it "
            "was made; run `make lock` and commit the result"
        )
    wanted = inputs(root)
    names = locked_names(text)
    for key in ("dependencies", "lake", "build-system", "requirements-exe.in"):
        for requirement in wanted[key]:
            if requirement_name(requirement) not in names:
                found.append(f"{LOCK} lacks {requirement!r} ({key}); run `make lock`")
    return found


def tools_venv() -> Path:
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mpexport/lock-tools"
    return Path(os.environ.get("MPEXPORT_LOCK_VENV", default))


def ensure_uv() -> Path:
    """uv in the tools venv, installed once per requirement (a stamp file)."""
    venv = tools_venv()
    bindir = venv / ("Scripts" if os.name == "nt" else "bin")
    python = bindir / ("python.exe" if os.name == "nt" else "python")
    uv = bindir / ("uv.exe" if os.name == "nt" else "uv")
    stamp = venv / (".installed-" + re.sub(r"[^A-Za-z0-9._=-]", "_", UV_REQUIREMENT))
    if not python.exists():
        venv.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    if not stamp.exists() or not uv.exists():
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
             "--only-binary", ":all:", UV_REQUIREMENT],
            check=True,
        )
        stamp.touch()
    return uv


def compile_lock(uv_args: list[str]) -> None:
    uv = ensure_uv()
    command = [
        str(uv), "pip", "compile", "--quiet",
        "--universal", "--python-version", PYTHON_VERSION,
        "--generate-hashes", "--only-binary", ":all:",
        "--custom-compile-command", "make lock",
        "--extra", "lake", "pyproject.toml", INPUT,
        "--output-file", LOCK,
        *uv_args,
    ]
    print("lock_exe:", " ".join(command[1:]), flush=True)
    subprocess.run(command, cwd=ROOT, check=True)
    lock = ROOT / LOCK
    header = HEADER.format(
        python=PYTHON_VERSION, targets=", ".join(TARGETS), digest=inputs_digest()
    )
    with lock.open("r+", encoding="utf-8", newline="\n") as file:
        body = file.read()
        file.seek(0)
        file.write(header + body)
        file.truncate()
    print(f"lock_exe: wrote {LOCK}")


def verify() -> None:
    uv = ensure_uv()
    failed = []
    for target, platform in TARGETS.items():
        with tempfile.TemporaryDirectory(prefix=f"mpexport-lock-{target}-") as scratch:
            result = subprocess.run(
                [str(uv), "pip", "install", "--quiet", "--require-hashes",
                 "--only-binary", ":all:",
                 "--python-version", PYTHON_VERSION, "--python-platform", platform,
                 "--target", scratch, "-r", LOCK],
                cwd=ROOT, capture_output=True, text=True,
            )
            installed = len(list(Path(scratch).glob("*.dist-info")))
        if result.returncode == 0:
            print(f"lock_exe: {target} ({platform}): {installed} hash-checked wheels")
        else:
            failed.append(target)
            print(f"lock_exe: {target} ({platform}) FAILED:\n{result.stderr.strip()}",
                  file=sys.stderr)
    if failed:
        sys.exit(f"lock_exe: {LOCK} does not install on {', '.join(failed)}")


def main(argv: list[str]) -> None:
    if not argv or argv[0] not in {"compile", "check", "verify"}:
        sys.exit(__doc__)
    command, rest = argv[0], argv[1:]
    if command == "check":
        found = problems()
        for problem in found:
            print(f"lock_exe: {problem}", file=sys.stderr)
        if found:
            sys.exit(1)
        print(f"lock_exe: {LOCK} is current")
        return
    if command == "compile":
        compile_lock(rest)
    found = problems()
    if found:
        sys.exit("\n".join(f"lock_exe: {problem}" for problem in found))
    verify()


if __name__ == "__main__":
    main(sys.argv[1:])
