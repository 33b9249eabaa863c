#!/usr/bin/env bash
# Build the frozen mpexport executable(s) from packaging/mpexport.spec.
#
# PyInstaller runs from a clean venv (build/exe-venv) that holds only
# mpexport's runtime dependencies with the lake's (`pip install '.[lake]'`) and PyInstaller: whatever
# else is importable at build time may be bundled (pyarrow/numpy/pandas would
# more than double the size).
#
#   packaging/build_exe.sh                      onedir + onefile
#   MPEXPORT_EXE_MODES=onedir packaging/build_exe.sh
#
# Environment: PYTHON (interpreter for the venv, default python3.11 or python3),
# MPEXPORT_EXE_VENV (default build/exe-venv), MPEXPORT_EXE_MODES,
# MPEXPORT_EXE_EXTRAS (default "[lake]": s3://, gs://, az:// lakes; empty leaves
# them out, in a venv that never had them).
# Works on Linux, macOS and Windows (Git Bash, as in the GitHub workflow).
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

# 1. The clean venv: created once, then kept; `pip install .` re-resolves the
#    deps (quick when nothing changed) and always reinstalls mpexport itself.
if [ ! -x "$vpy" ]; then
    echo "build_exe: creating $venv with $("$PYTHON" -c 'import sys; print(sys.version.split()[0])')"
    "$PYTHON" -m venv "$venv"
    "$vpy" -m pip install -q --upgrade pip
fi
# setuptools builds in-tree under build/lib: a module deleted from mpexport/
# would otherwise survive there and be bundled.
rm -rf build/lib build/bdist.*
"$vpy" -m pip install -q ".${MPEXPORT_EXE_EXTRAS-[lake]}" 'pyinstaller>=6.3,<7'

# Only runtime dependencies (and PyInstaller's own) may be in the venv.
"$vpy" - <<'EOF'
import importlib.metadata as md
import sys
names = {d.metadata["Name"].lower().replace("_", "-") for d in md.distributions()}
heavy = sorted(names & {"pyarrow", "numpy", "pandas", "polars", "pytest", "hypothesis", "mypy"})
if heavy:
    sys.exit(f"build_exe: the build venv is not clean, it holds {heavy}; delete it and rebuild")
EOF

# 2. Freeze.
echo "build_exe: PyInstaller $("$vpy" -m PyInstaller --version), modes $MPEXPORT_EXE_MODES"
"$vpy" -m PyInstaller --noconfirm --clean --log-level WARN \
    --distpath dist --workpath build/pyinstaller packaging/mpexport.spec

# 3. Check what came out.
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

# 4. Startup: `--version`, median of 10 runs (after one warm-up run).
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
