#!/usr/bin/env bash
# Run the frozen test set (packaging/frozen-tests.txt) against a built binary.
#
#   packaging/run_frozen_tests.sh                          dist/mpexport/mpexport[.exe]
#   packaging/run_frozen_tests.sh dist/mpexport-onefile    another build
#   packaging/run_frozen_tests.sh BINARY -x -v             extra pytest arguments
#
# A binary whose name holds "onefile" runs without the `not-onefile:` entries
# of frozen-tests.txt (the SIGKILL tests).
#
# The project venv's Python runs pytest only (it hosts the fake server and
# checks the results; TEST_PYTHON overrides it, default .venv). The binary runs
# with MPEXPORT_TEST_COMMAND pointing at it, from a PATH without any venv, and
# first with no Python on PATH at all (env -i).
set -euo pipefail
cd "$(dirname "$0")/.."

case "$(uname -s)" in
    MINGW* | MSYS* | CYGWIN*) windows=1; ext=.exe ;;
    *) windows=0; ext= ;;
esac

binary=${1:-dist/mpexport/mpexport$ext}
[ $# -gt 0 ] && shift
if [ ! -x "$binary" ]; then
    echo "run_frozen_tests: $binary not found; build it with 'make exe'" >&2
    exit 2
fi
binary_abs="$(cd "$(dirname "$binary")" && pwd)/$(basename "$binary")"
if [ "$windows" = 1 ]; then
    # C:/... form: MPEXPORT_TEST_COMMAND is split with shlex (POSIX rules),
    # which would eat the backslashes of C:\...\mpexport.exe.
    binary_abs=$(cygpath -m "$binary_abs")
fi

if [ -z "${TEST_PYTHON:-}" ]; then
    if [ -x .venv/bin/python ]; then TEST_PYTHON=.venv/bin/python
    elif [ -x .venv/Scripts/python.exe ]; then TEST_PYTHON=.venv/Scripts/python.exe
    else
        echo "run_frozen_tests: no .venv; run 'make test' once or set TEST_PYTHON" >&2
        exit 2
    fi
fi
test_python_dir=$(cd "$(dirname "$TEST_PYTHON")" && pwd)

# The binary's PATH: the caller's, less every venv (the test venv, the build
# venv, an activated one) and any PYTHON* variable that could steer it.
clean_path=
IFS=: read -r -a entries <<< "$PATH"
for dir in "${entries[@]}"; do
    [ -n "$dir" ] || continue
    [ -e "$dir/../pyvenv.cfg" ] && continue
    [ "$(cd "$dir" 2> /dev/null && pwd)" = "$test_python_dir" ] && continue
    clean_path=${clean_path:+$clean_path:}$dir
done
export PATH=$clean_path
unset VIRTUAL_ENV PYTHONHOME PYTHONPATH PYTHONSTARTUP PYTHONUTF8 PYTHONIOENCODING

# 1. No Python at all: an empty PATH directory and nothing else in the
#    environment (Windows itself needs SYSTEMROOT).
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
mkdir "$scratch/empty"
minimal=(env -i "PATH=$scratch/empty" "HOME=$scratch" "TMPDIR=$scratch"
         "MPEXPORT_STATE_DIR=$scratch/state")
if [ "$windows" = 1 ]; then
    minimal+=("SYSTEMROOT=${SYSTEMROOT:-C:\\Windows}" "TEMP=${TEMP:-}" "TMP=${TMP:-}")
fi
echo "run_frozen_tests: $binary_abs with no Python on PATH"
"${minimal[@]}" "$binary_abs" --version
set +e
"${minimal[@]}" "$binary_abs" export --no-such-option 2> /dev/null
code=$?
set -e
if [ "$code" != 2 ]; then
    echo "run_frozen_tests: a usage error gave exit $code, not 2" >&2
    exit 1
fi
"${minimal[@]}" "$binary_abs" demo --days 3 --events-per-day 200 --no-progress \
    --output "$scratch/demo.duckdb" 2>&1 | tail -n 1

# 2. The frozen test set. A onefile build (its name says so) runs without the
#    `not-onefile:` tests: SIGKILL reaches only its bootloader, and the Python
#    child it unpacked and started carries on, holding what the test expects
#    a killed run to have let go.
case "$(basename "$binary")" in
    *onefile*) onefile=1 ;;
    *) onefile=0 ;;
esac
nodes=()
deselect=()
while IFS= read -r line || [ -n "$line" ]; do
    line=${line%%#*}
    line=$(echo "$line" | sed -e 's/^[[:space:]]*//' -e 's/[[:space:]]*$//')
    [ -n "$line" ] || continue
    case "$line" in
        posix:*)
            [ "$windows" = 1 ] && continue
            line=$(echo "${line#posix:}" | sed -e 's/^[[:space:]]*//')
            ;;
        not-onefile:*)
            line=$(echo "${line#not-onefile:}" | sed -e 's/^[[:space:]]*//')
            [ "$onefile" = 1 ] && deselect+=(--deselect "$line")
            continue
            ;;
    esac
    nodes+=("$line")
done < packaging/frozen-tests.txt

export MPEXPORT_TEST_COMMAND="$binary_abs"
echo "run_frozen_tests: MPEXPORT_TEST_COMMAND=$MPEXPORT_TEST_COMMAND, ${#nodes[@]} entries," \
    "$(( ${#deselect[@]} / 2 )) deselected"
exec "$TEST_PYTHON" -m pytest -p no:cacheprovider -q "${nodes[@]}" ${deselect[@]+"${deselect[@]}"} "$@"
