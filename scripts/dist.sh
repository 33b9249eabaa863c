#!/usr/bin/env bash
# Build the sdist and the wheel into dist/ and check them, as the release
# workflow does before it publishes them (`make dist`):
#
#   1. `python -m build`: the sdist, then the wheel built from that sdist (so
#      a file the sdist lacks fails here), in an isolated build env with
#      pyproject.toml's build backend;
#   2. `twine check --strict`: the metadata and the README render on the index;
#   3. the contents: the wheel holds the package (mpexport/..., the console
#      script) and nothing else, and both carry the version of
#      mpexport/version.py;
#   4. the wheel installed into a new venv (its dependencies from the index,
#      mpexport itself only from dist/), where `mpexport --version` must name
#      that version and `mpexport demo` must run, from a folder outside the tree.
#
# build and twine are installed into a venv outside the repository, created
# once and then reused (no dependency of the project):
#   MPEXPORT_DIST_VENV   the venv (default ~/.cache/mpexport/dist-tools)
#   MPEXPORT_BUILD       build's requirement (default build==1.6.1)
#   MPEXPORT_TWINE       twine's requirement (default twine==7.0.0)
#   PYTHON               the interpreter (default python3)
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
venv=${MPEXPORT_DIST_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/mpexport/dist-tools}
build_req=${MPEXPORT_BUILD:-build==1.6.1}
twine_req=${MPEXPORT_TWINE:-twine==7.0.0}

case "$(uname -s)" in
    MINGW* | MSYS* | CYGWIN*) bindir=Scripts; exe=.exe ;;
    *) bindir=bin; exe= ;;
esac

version=$("$python" -c 'import ast, sys
tree = ast.parse(open("mpexport/version.py", encoding="utf-8").read())
print(next(n.value.value for n in tree.body if isinstance(n, ast.Assign)
           and n.targets[0].id == "__version__"))')
echo "dist: mpexport $version"

# The tools.
if [ ! -x "$venv/$bindir/python$exe" ]; then
    mkdir -p "$(dirname "$venv")"
    "$python" -m venv "$venv"
fi
stamp="$venv/.installed-$(printf '%s %s' "$build_req" "$twine_req" | tr -c 'A-Za-z0-9._=-' '_')"
if [ ! -e "$stamp" ]; then
    "$venv/$bindir/python$exe" -m pip install -q --disable-pip-version-check \
        "$build_req" "$twine_req"
    touch "$stamp"
fi

# 1. Build. Only this version's files stay in dist/ (the executables' folders
#    and files, which `make exe` writes there too, are left alone).
rm -f dist/mpexport-*.tar.gz dist/mpexport-*.whl
rm -rf build/lib build/bdist.* ./*.egg-info
mkdir -p build dist
"$venv/$bindir/python$exe" -m build --outdir dist . > build/dist-build.log 2>&1 || {
    tail -n 30 build/dist-build.log >&2
    echo "dist: python -m build failed (log: build/dist-build.log)" >&2
    exit 1
}
sdist=dist/mpexport-$version.tar.gz
wheel=dist/mpexport-$version-py3-none-any.whl
for file in "$sdist" "$wheel"; do
    [ -f "$file" ] || { echo "dist: $file was not built ($(ls dist))" >&2; exit 1; }
done

# 2. The index's own checks.
"$venv/$bindir/python$exe" -m twine check --strict "$sdist" "$wheel"

# 3. What is inside.
"$venv/$bindir/python$exe" - "$sdist" "$wheel" "$version" <<'EOF'
import sys
import tarfile
import zipfile

sdist, wheel, version = sys.argv[1:]
problems = []
with zipfile.ZipFile(wheel) as zf:
    names = zf.namelist()
    info = f"mpexport-{version}.dist-info/"
    tops = {n.split("/")[0] for n in names}
    if tops != {"mpexport", info.rstrip("/")}:
        problems.append(f"wheel: top-level entries {sorted(tops)}, expected mpexport/ and {info}")
    for needed in ("mpexport/__init__.py", "mpexport/__main__.py", "mpexport/version.py",
                   "mpexport/fakeserver/__init__.py", f"{info}METADATA",
                   f"{info}entry_points.txt"):
        if needed not in names:
            problems.append(f"wheel: {needed} missing")
    metadata = zf.read(f"{info}METADATA").decode()
    if f"\nVersion: {version}\n" not in metadata:
        problems.append(f"wheel: METADATA does not say Version: {version}")
    if "mpexport = mpexport.__main__:main" not in zf.read(f"{info}entry_points.txt").decode():
        problems.append("wheel: no mpexport console script")
    if any("/tests/" in n or n.startswith("tests/") for n in names):
        problems.append("wheel: holds tests")
with tarfile.open(sdist) as tf:
    names = tf.getnames()
    root = f"mpexport-{version}/"
    for needed in ("pyproject.toml", "README.md", "mpexport/__main__.py", "PKG-INFO"):
        if root + needed not in names:
            problems.append(f"sdist: {root + needed} missing")
print(f"dist: {wheel} ({len(zipfile.ZipFile(wheel).namelist())} files), {sdist} "
      f"({len(names)} entries)")
if problems:
    sys.exit("dist: " + "\ndist: ".join(problems))
EOF

# 4. A clean install, away from the tree (nothing imports the checkout).
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
"$python" -m venv "$scratch/venv"
"$scratch/venv/$bindir/python$exe" -m pip install -q --disable-pip-version-check \
    "$wheel"
mp=$scratch/venv/$bindir/mpexport$exe
(
    cd "$scratch"
    unset PYTHONPATH
    said=$("$mp" --version)
    echo "dist: installed: $said"
    case "$said" in
        "mpexport $version ("*) ;;
        *) echo "dist: --version does not name $version" >&2; exit 1 ;;
    esac
    MPEXPORT_STATE_DIR="$scratch/state" "$mp" demo --no-progress > "$scratch/demo.log" 2>&1 || {
        cat "$scratch/demo.log" >&2
        echo "dist: mpexport demo failed in the clean venv" >&2
        exit 1
    }
    tail -n 3 "$scratch/demo.log"
    [ -s "$scratch/demo.duckdb" ] || { echo "dist: demo wrote no demo.duckdb" >&2; exit 1; }
)
echo "dist: OK: $sdist $wheel"
