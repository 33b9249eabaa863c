#!/usr/bin/env bash
# Build the frozen mpexport executable(s) from packaging/mpexport.spec.
#
# PyInstaller runs from a clean venv (build/exe-venv) that holds exactly the
# hashed lock packaging/requirements-exe.txt (mpexport's runtime dependencies
# with the lake's, PyInstaller, the build backend; `make lock` makes it) and
# mpexport itself, nothing else: whatever else is importable at build time may
# be bundled (pyarrow/numpy/pandas would more than double the size).
#
#   packaging/build_exe.sh                      onedir + onefile
#   MPEXPORT_EXE_MODES=onedir packaging/build_exe.sh
#
# Environment: PYTHON (interpreter for the venv, default python3.11 or python3),
# MPEXPORT_EXE_VENV (default build/exe-venv), MPEXPORT_EXE_MODES.
# Works on Linux, macOS and Windows (Git Bash, as in the GitHub workflows).
set -euo pipefail
cd "$(dirname "$0")/.."

case "$(uname -s)" in
    MINGW* | MSYS* | CYGWIN*) windows=1 ;;
    *) windows=0 ;;
esac

if [ -z "${PYTHON:-}" ]; then
    if command -v python3.11 > /dev/null 2>&1; then PYTHON=python3.11
    elif command -v python3 > /dev/null 2>&1; then PYTHON=python3
    else PYTHON=python
    fi
fi
venv=${MPEXPORT_EXE_VENV:-build/exe-venv}
export MPEXPORT_EXE_MODES=${MPEXPORT_EXE_MODES:-onedir,onefile}
if [ "$windows" = 1 ]; then vpy=$venv/Scripts/python.exe; else vpy=$venv/bin/python; fi

start=$(date +%s)

lock=packaging/requirements-exe.txt

# 1. The lock: there, and made from today's pyproject.toml and
#    requirements-exe.in (its recorded digest), or stop here.
"$PYTHON" scripts/lock_exe.py check || {
    echo "build_exe: not building from a missing or stale $lock (above)" >&2
    exit 1
}
lock_sha=$("$PYTHON" -c 'import hashlib, sys; print(hashlib.sha256(open(sys.argv[1], "rb").read()).hexdigest())' "$lock")

# 2. The clean venv: made from the lock, then kept while the lock is the same
#    (its sha256 in $venv/.lock-sha256); a changed lock makes a new venv, so
#    nothing the lock no longer holds survives. pip is the one the interpreter
#    ships (never upgraded from the index); every wheel it installs is checked
#    against the lock's hashes, and nothing but the lock's wheels is installed
#    (--no-deps: the lock is complete; `pip check` below proves it).
if [ -x "$vpy" ] && [ "$(cat "$venv/.lock-sha256" 2> /dev/null)" != "$lock_sha" ]; then
    echo "build_exe: $venv was not made from today's $lock; making it anew"
    rm -rf "$venv"
fi
if [ ! -x "$vpy" ]; then
    echo "build_exe: creating $venv with $("$PYTHON" -c 'import sys; print(sys.version.split()[0])') from $lock"
    "$PYTHON" -m venv "$venv"
    "$vpy" -m pip install -q --disable-pip-version-check \
        --require-hashes --only-binary :all: --no-deps -r "$lock"
    echo "$lock_sha" > "$venv/.lock-sha256"
fi
# mpexport itself, from the tree, every time: no dependencies (the lock has
# them), built by the lock's setuptools (no isolated build env fetched from
# the index). setuptools builds in-tree under build/lib: a module deleted from
# mpexport/ would otherwise survive there and be bundled.
rm -rf build/lib build/bdist.*
"$vpy" -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation .
"$vpy" -m pip check > /dev/null || {
    "$vpy" -m pip check >&2
    echo "build_exe: the venv's requirements are not all met (above): is $lock current? run 'make lock'" >&2
    exit 1
}

# Exactly the lock (this platform's part of it), mpexport and pip; never the
# heavy modules, whatever the lock says.
"$vpy" - "$lock" <<'EOF'
import importlib.metadata as md
import re
import sys

from packaging.requirements import Requirement  # the lock's (PyInstaller needs it)


def canonical(name):
    return re.sub(r"[-_.]+", "-", name).lower()


names = {canonical(d.metadata["Name"]) for d in md.distributions()}
heavy = sorted(names & {"pyarrow", "numpy", "pandas", "polars", "pytest", "hypothesis", "mypy"})
if heavy:
    sys.exit(f"build_exe: the build venv is not clean, it holds {heavy}; delete it and rebuild")
locked = set()
with open(sys.argv[1], encoding="utf-8") as lock:
    for line in lock:
        if re.match(r"[A-Za-z0-9]", line):
            requirement = Requirement(line.rstrip().rstrip("\\").strip())
            if requirement.marker is None or requirement.marker.evaluate():
                locked.add(canonical(requirement.name))
extra = sorted(names - locked - {"pip", "mpexport"})
missing = sorted(locked - names)
if extra or missing:
    sys.exit(f"build_exe: the build venv is not the lock: not locked {extra}, "
             f"locked but missing {missing}; delete it and rebuild")
EOF

# 3. Freeze.
echo "build_exe: PyInstaller $("$vpy" -m PyInstaller --version), modes $MPEXPORT_EXE_MODES"
"$vpy" -m PyInstaller --noconfirm --clean --log-level WARN \
    --distpath dist --workpath build/pyinstaller packaging/mpexport.spec

# 4. Check what came out.
if [ "$windows" = 1 ]; then ext=.exe; else ext=; fi
built=()
case ",$MPEXPORT_EXE_MODES," in *,onedir,*) built+=("dist/mpexport/mpexport$ext") ;; esac
case ",$MPEXPORT_EXE_MODES," in *,onefile,*) built+=("dist/mpexport-onefile$ext") ;; esac
for exe in "${built[@]}"; do
    test -x "$exe" || { echo "build_exe: $exe missing" >&2; exit 1; }
done
case ",$MPEXPORT_EXE_MODES," in
    *,onedir,*)
        internal=dist/mpexport/_internal
        for mod in pyarrow numpy pandas polars tkinter _tkinter; do
            if [ -e "$internal/$mod" ] || compgen -G "$internal/$mod.*" > /dev/null \
                || compgen -G "$internal/lib-dynload/$mod.*" > /dev/null; then
                echo "build_exe: $mod was bundled; it must be excluded" >&2
                exit 1
            fi
        done
        test -f "$internal/certifi/cacert.pem" \
            || { echo "build_exe: certifi/cacert.pem not bundled" >&2; exit 1; }
        ;;
esac
echo "build_exe: built in $(( $(date +%s) - start ))s:"
for exe in "${built[@]}"; do
    echo "  $exe  ($("$exe" --version))"
done
case ",$MPEXPORT_EXE_MODES," in
    *,onedir,*) echo "  dist/mpexport: $(du -sh dist/mpexport | cut -f1)" ;;
esac

# 5. Startup: `--version`, median of 10 runs (after one warm-up run).
"$vpy" - "${built[@]}" <<'EOF'
import statistics
import subprocess
import sys
import time

for exe in sys.argv[1:]:
    subprocess.run([exe, "--version"], check=True, capture_output=True)
    times = []
    for _ in range(10):
        started = time.perf_counter()
        subprocess.run([exe, "--version"], check=True, capture_output=True)
        times.append(time.perf_counter() - started)
    print(f"  {exe} --version: median {statistics.median(times):.3f}s "
          f"(min {min(times):.3f}s, max {max(times):.3f}s, 10 runs)")
EOF
