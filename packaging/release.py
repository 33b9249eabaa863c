"""The release's files: the version check, the executables' archives, SHA256SUMS.

The release workflow (.github/workflows/release.yml) and `make release-dry-run`
run the same commands:

    python packaging/release.py version [--tag vX.Y.Z]
        prints mpexport/version.py's version; with --tag, exits 1 unless the tag
        is exactly "v" + that version (a release of the wrong version never
        starts building).
    python packaging/release.py archive PLATFORM [--dist dist] [--out dist/release]
        packs what `make exe` built for this machine (PLATFORM: linux-x86_64,
        macos-arm64 or windows-x64) after checking that each build's
        `--version` names the package's version:
          mpexport-X.Y.Z-PLATFORM.tar.gz (.zip on Windows)
              the onedir build, as the folder mpexport-X.Y.Z-PLATFORM/
              (mpexport[.exe] and _internal/ beside it);
          mpexport-X.Y.Z-PLATFORM-onefile.tar.gz (.zip)
              the onefile build, as mpexport[.exe] alone.
        tar.gz keeps the executable bit (zip is what Windows opens natively).
        A build that is absent is skipped, unless --require names it.
    python packaging/release.py sums DIR
        writes DIR/SHA256SUMS: one `sha256  name` line per file in DIR, sorted
        (the `sha256sum -c` format), and prints it.

Standard library only: it runs with the runner's Python on every platform.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import os
import platform as platform_module
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PLATFORMS = ("linux-x86_64", "macos-arm64", "windows-x64")
SUMS = "SHA256SUMS"


def package_version() -> str:
    """``__version__`` of mpexport/version.py, read without importing the package."""
    tree = ast.parse((ROOT / "mpexport" / "version.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if (isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)
                and node.targets[0].id == "__version__"
                and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)):
            return node.value.value
    raise SystemExit("release: no __version__ = '...' in mpexport/version.py")


def this_platform() -> str:
    """This machine's name among PLATFORMS (exits on another machine)."""
    machine = platform_module.machine().lower()
    name = {("linux", "x86_64"): "linux-x86_64", ("darwin", "arm64"): "macos-arm64",
            ("win32", "amd64"): "windows-x64"}.get((sys.platform, machine))
    if name is None:
        raise SystemExit(f"release: no release build for {sys.platform} {machine}; "
                         f"name one of {', '.join(PLATFORMS)}")
    return name


def check_tag(tag: str, version: str) -> str | None:
    """Why ``tag`` does not release ``version`` (None when it is ``v`` + version)."""
    if tag == f"v{version}":
        return None
    return (f"the tag {tag!r} does not match the package's version {version!r} "
            f"(mpexport/version.py): tag v{version}, or change __version__ and tag again")


def check_binary(binary: Path, version: str) -> None:
    """Exit unless ``binary --version`` starts with ``mpexport VERSION (``."""
    said = subprocess.run([str(binary), "--version"], capture_output=True, text=True,
                          check=False)
    line = said.stdout.strip()
    if said.returncode != 0 or not line.startswith(f"mpexport {version} ("):
        raise SystemExit(f"release: {binary} --version said {line!r} (exit {said.returncode}, "
                         f"{said.stderr.strip()[-300:]!r}), not mpexport {version}")
    print(f"release: {binary}: {line}")


def pack_tar(out: Path, members: list[tuple[Path, str]]) -> None:
    def normalized(info: tarfile.TarInfo) -> tarfile.TarInfo:
        # No build machine's user or group in the archive.
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        return info

    with tarfile.open(out, "w:gz") as tar:
        for path, name in members:
            tar.add(path, arcname=name, filter=normalized)


def pack_zip(out: Path, members: list[tuple[Path, str]]) -> None:
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for path, name in members:
            if path.is_dir():
                for file in sorted(path.rglob("*")):
                    zf.write(file, f"{name}/{file.relative_to(path).as_posix()}")
            else:
                zf.write(path, name)


def archive(platform: str, dist: Path, out: Path, require: set[str]) -> list[Path]:
    """The archives of the builds in ``dist`` (see the module's docstring)."""
    version = package_version()
    windows = platform.startswith("windows")
    exe = "mpexport.exe" if windows else "mpexport"
    suffix = ".zip" if windows else ".tar.gz"
    pack = pack_zip if windows else pack_tar
    stem = f"mpexport-{version}-{platform}"
    builds = {
        "onedir": (dist / "mpexport" / exe, dist / "mpexport", stem, f"{stem}{suffix}"),
        "onefile": (dist / ("mpexport-onefile.exe" if windows else "mpexport-onefile"),
                    None, exe, f"{stem}-onefile{suffix}"),
    }
    out.mkdir(parents=True, exist_ok=True)
    made = []
    for mode, (binary, folder, name, archive_name) in builds.items():
        if not binary.is_file():
            if mode in require:
                raise SystemExit(f"release: {binary} not built (make exe)")
            print(f"release: {mode}: {binary} not built, skipped")
            continue
        check_binary(binary, version)
        target = out / archive_name
        target.unlink(missing_ok=True)
        pack(target, [(folder if folder is not None else binary, name)])
        made.append(target)
        print(f"release: {target} ({target.stat().st_size / 1e6:.1f} MB)")
    if not made:
        raise SystemExit(f"release: nothing to archive in {dist} (make exe)")
    return made


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_sums(folder: Path) -> Path:
    """``folder``/SHA256SUMS over every other file in ``folder``."""
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.name != SUMS)
    if not files:
        raise SystemExit(f"release: no files in {folder}")
    text = "".join(f"{sha256(p)}  {p.name}\n" for p in files)
    target = folder / SUMS
    # LF and no BOM on every platform: `sha256sum -c` reads it as written.
    target.write_bytes(text.encode("ascii"))
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    v = sub.add_parser("version", help="print the version; with --tag, check the tag")
    v.add_argument("--tag")
    a = sub.add_parser("archive", help="archive this machine's builds")
    a.add_argument("platform", nargs="?", choices=PLATFORMS,
                   help="default: this machine's, if it is one of them")
    a.add_argument("--dist", type=Path, default=ROOT / "dist")
    a.add_argument("--out", type=Path, default=ROOT / "dist" / "release")
    a.add_argument("--require", default="",
                   help="comma-separated builds that must be there (onedir,onefile)")
    s = sub.add_parser("sums", help="write DIR/SHA256SUMS")
    s.add_argument("folder", type=Path)
    args = parser.parse_args(argv)

    if args.command == "version":
        version = package_version()
        if args.tag is not None:
            problem = check_tag(args.tag, version)
            if problem:
                print(f"release: {problem}", file=sys.stderr)
                return 1
        print(version)
    elif args.command == "archive":
        require = {m for m in args.require.split(",") if m}
        archive(args.platform or this_platform(), args.dist, args.out, require)
    else:
        sys.stdout.write(write_sums(args.folder).read_text(encoding="ascii"))
    return 0


if __name__ == "__main__":
    os.chdir(ROOT)
    sys.exit(main())
