"""The demo's closing suggestion runs as typed, wherever mpexport was started from."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mpexport.cli.demo import program_words, try_lines
from tests.helpers import PATIENCE, clean_env


def _script(folder: Path) -> Path:
    """A console script named ``mpexport``, as pip writes into ``.venv/bin``."""
    folder.mkdir(parents=True)
    script = folder / "mpexport"
    script.write_text(f"#!{sys.executable}\nfrom mpexport.cli.main import run\n"
                      "raise SystemExit(run())\n")
    script.chmod(0o755)
    return script


def test_a_script_not_on_path_is_named_as_invoked(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    script = _script(tmp_path / ".venv" / "bin")
    monkeypatch.chdir(tmp_path)
    assert program_words(".venv/bin/mpexport", sys.executable, False,
                         which=lambda _: None) == [".venv/bin/mpexport"]
    # Another mpexport on PATH is not this one: still named by its path.
    other = _script(tmp_path / "elsewhere")
    assert program_words(".venv/bin/mpexport", sys.executable, False,
                         which=lambda _: str(other)) == [".venv/bin/mpexport"]
    # PATH finds this very file: plain `mpexport` runs it.
    assert program_words(".venv/bin/mpexport", sys.executable, False,
                         which=lambda _: str(script.resolve())) == ["mpexport"]


def test_python_dash_m_and_the_frozen_executable(tmp_path: Path) -> None:
    main = str(Path("mpexport", "__main__.py").resolve())
    assert program_words(main, "/opt/py/bin/python3", False, which=lambda _: "/usr/bin/mpexport") \
        == ["/opt/py/bin/python3", "-m", "mpexport"]
    exe = _script(tmp_path / "dist")
    assert program_words("mpexport", str(exe), True, which=lambda _: None) == [str(exe)]
    assert program_words("mpexport", str(exe), True, which=lambda _: str(exe)) == ["mpexport"]


def test_the_suggestion_is_quoted_for_the_shell_and_says_how_to_get_mpexport_on_path(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    _script(tmp_path / ".venv" / "bin")
    (tmp_path / ".venv" / "bin" / "activate").write_text("")
    lines = try_lines(Path("my demo.duckdb"), [".venv/bin/mpexport"])
    if sys.platform != "win32":
        assert lines == [
            "demo: try it (`mpexport` alone is not on PATH: `. .venv/bin/activate` puts it "
            "there for this shell):",
            "  .venv/bin/mpexport sql 'my demo.duckdb' "
            "'SELECT event, count(*) FROM events GROUP BY 1 ORDER BY 2 DESC'",
        ]
    assert try_lines(Path("demo.duckdb"), ["mpexport"])[0] == "demo: try it:"


@pytest.mark.skipif(sys.platform == "win32" or bool(os.environ.get("MPEXPORT_TEST_COMMAND")),
                    reason="a POSIX console script of this Python, as `make demo` runs")
def test_make_demo_suggests_a_command_that_runs_as_typed(tmp_path: Path) -> None:
    # What `make demo` does: .venv/bin/mpexport, with .venv/bin not on PATH.
    _script(tmp_path / ".venv" / "bin")
    (tmp_path / ".venv" / "bin" / "activate").write_text("")
    env = clean_env()
    env["PATH"] = os.pathsep.join(
        p for p in env.get("PATH", "").split(os.pathsep)
        if p and not (Path(p) / "mpexport").exists())
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[1]),
                                         env.get("PYTHONPATH", "")])
    demo = subprocess.run([".venv/bin/mpexport", "demo", "--days", "2", "--events-per-day", "30",
                           "--no-progress"], env=env, cwd=tmp_path, capture_output=True,
                          text=True, timeout=PATIENCE, stdin=subprocess.DEVNULL)
    assert demo.returncode == 0, demo.stderr
    hint, line = demo.stderr.splitlines()[-2:]
    assert hint == ("demo: try it (`mpexport` alone is not on PATH: `. .venv/bin/activate` "
                    "puts it there for this shell):")
    assert line.startswith("  .venv/bin/mpexport sql demo.duckdb 'SELECT "), line
    typed = subprocess.run(["bash", "-c", line], env=env, cwd=tmp_path, capture_output=True,
                           text=True, timeout=PATIENCE)
    assert typed.returncode == 0, typed.stderr
    assert typed.stdout.strip().endswith("rows)"), typed.stdout
