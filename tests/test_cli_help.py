"""Every command documents itself; exit codes are in the help."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from mpexport.cli.main import cli


def walk(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    paths = []
    for name, command in group.commands.items():
        paths.append((*prefix, name))
        if isinstance(command, click.Group):
            paths += walk(command, (*prefix, name))
    return paths


@pytest.mark.parametrize("path", walk(cli))
def test_every_command_has_help(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(cli, [*path, "--help"])
    assert result.exit_code == 0
    command = cli
    for name in path:
        assert isinstance(command, click.Group)
        command = command.commands[name]
    assert command.help and len(command.help) > 40


def test_export_help_lists_exit_codes_and_env() -> None:
    result = CliRunner().invoke(cli, ["export", "--help"])
    for text in ("Exit codes", "130", "MP_USERNAME", "MP_API_SECRET", "--dry-run"):
        assert text in result.stdout


def test_version_names_python_duckdb_and_requests() -> None:
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0
    for text in ("mpexport 0.", "Python 3.", "duckdb ", "requests ", "loader budget "):
        assert text in result.stdout
    assert len(result.stdout.splitlines()) == 1  # scripts and the frozen build's test read one line


def test_version_says_the_budget_and_threads_of_the_machine() -> None:
    import dataclasses

    from mpexport.cli.main import version_text
    from mpexport.environment import Environment

    cron_vm = Environment.of({}, cpus=2, memory_bytes=4 * 1024**3)
    assert version_text(cron_vm).endswith(
        "; loader budget 256MB, 1 thread: the default for 2 cores and 4.0 GiB)")
    big = dataclasses.replace(cron_vm, cpus=16, memory_bytes=64 * 1024**3)
    assert "loader budget 2135MB, 15 threads: the default for 16 cores and 64.0 GiB" in (
        version_text(big))
    variable = Environment.of({"MPEXPORT_MEMORY_LIMIT": "1GB"}, cpus=16, memory_bytes=1)
    assert "loader budget 1GB, 7 threads: set by MPEXPORT_MEMORY_LIMIT" in version_text(variable)


def test_shell_completion_script() -> None:
    import subprocess
    import sys

    from tests.helpers import clean_env

    env = clean_env({"_MPEXPORT_COMPLETE": "bash_source"})
    proc = subprocess.run([sys.executable, "-c", "from mpexport.cli.main import run; "
                           "raise SystemExit(run())"], env=env, capture_output=True)
    assert proc.returncode == 0
    assert b"_mpexport_completion" in proc.stdout


def test_the_cron_example_of_the_help_runs_as_shown_on_a_new_file(
        make_server: Any, tmp_path: Path) -> None:
    # The line is taken from the help itself, so the help cannot drift from what works.
    import shlex

    from mpexport.fakeserver import Dataset
    from tests.helpers import run_cli

    text = CliRunner().invoke(cli, ["--help"]).stdout
    lines = text.splitlines()
    at = next(i for i, line in enumerate(lines) if "from cron" in line)
    argv = shlex.split(lines[at + 1])
    assert argv[:2] == ["mpexport", "sync"]
    # Few events a day: the example's range starts years back. The server's
    # day is the real one, as the example's range ends today.
    server = make_server(Dataset(seed=3, events_per_day=3, long_values=False), today=None)
    for _ in range(2):  # the first run on a new file, then cron's next
        result = run_cli([*argv[1:], "--api-url", server.url], cwd=tmp_path)
        assert result.code == 0, result.stderr
        assert result.stderr == ""  # --quiet
    assert (tmp_path / "events.duckdb").is_file()
