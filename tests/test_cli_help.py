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


# -- help that reads like gh or rclone ---------------------------------------------------

EXPORT_HEADINGS = ["Range and filters:", "Destination:", "Pacing:",
                   "Credentials and project:", "Output and logging:"]


def help_text(*path: str) -> str:
    """``--help`` as a wide terminal shows it (help stays within 80 columns anyway)."""
    result = CliRunner().invoke(cli, [*path, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    return result.stdout


def sections(text: str) -> dict[str, list[str]]:
    """The long option names under each heading of a help text."""
    found: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        if line and not line.startswith(" ") and line.endswith(":"):
            current = line
            found[current] = []
        elif current and line.startswith("  -"):
            found[current].append(next(w for w in line.split() if w.startswith("--")))
    return found


def test_export_help_groups_its_options_under_headings() -> None:
    found = sections(help_text("export"))
    assert [h for h in found if h in EXPORT_HEADINGS] == EXPORT_HEADINGS
    assert "Options:" not in found  # every option has its heading, --help included
    assert found["Range and filters:"] == ["--from", "--to", "--event", "--where", "--limit",
                                           "--project-timezone"]
    assert found["Destination:"] == ["--db", "--output", "--append", "--table", "--parquet",
                                     "--memory-limit", "--wait-lock", "--refresh", "--replace",
                                     "--verify"]
    assert found["Pacing:"] == ["--workers", "--chunk-days", "--retries", "--qps-limit",
                                "--hourly-limit"]
    assert found["Credentials and project:"] == ["--region", "--api-url", "--project-id",
                                                 "--profile"]
    assert found["Output and logging:"] == ["--dry-run", "--progress", "--quiet", "--verbose",
                                            "--summary-json", "--debug", "--help"]


@pytest.mark.parametrize("command", ["sync", "profiles"])
def test_sync_and_profiles_group_theirs_too(command: str) -> None:
    found = sections(help_text(command))
    assert "Options:" not in found
    pacing = ["--workers", "--retries", "--qps-limit", "--hourly-limit"]
    if command == "sync":
        pacing.insert(1, "--chunk-days")
        assert found["Range and filters:"][:3] == ["--from", "--to", "--lookback"]
    else:
        assert found["Which profiles:"] == ["--where", "--cohort", "--group-id", "--property"]
    assert found["Pacing:"] == pacing
    assert "--table" in found["Destination:"]


@pytest.mark.parametrize("path", [(), *walk(cli)])
def test_every_help_fits_80_columns(path: tuple[str, ...]) -> None:
    wide = [line for line in help_text(*path).splitlines() if len(line) > 80]
    assert wide == []


def test_the_table_option_is_a_name_everywhere() -> None:
    for command in ("export", "sync", "profiles"):
        assert "--table NAME" in help_text(command)
        assert "--table TEXT" not in help_text(command)


def test_demo_loads_a_db_and_output_stays_ndjson() -> None:
    demo = help_text("demo")
    assert "--db FILE" in demo and "--output" not in demo
    assert "-o, --output FILE    Write the NDJSON to FILE" in help_text("export")


def exit_codes_of(*path: str) -> dict[str, str]:
    text = help_text(*path).split("Exit codes:\n", 1)[1]
    codes = {}
    for line in text.splitlines():
        words = line.split(maxsplit=1)
        if words and words[0].isdigit():
            codes[words[0]] = words[1]
    return codes


def test_each_command_shows_its_own_exit_codes() -> None:
    check = exit_codes_of("check")
    assert set(check) == {"0", "1", "2", "3", "70", "130"}
    assert check["0"] == "the credentials can export the project"
    assert set(exit_codes_of("export")) == {"0", "1", "2", "3", "4", "70", "130"}
    assert "chunk" in exit_codes_of("export")["0"]
    profiles = exit_codes_of("profiles")
    assert "page" in profiles["0"] and "chunk" not in " ".join(profiles.values())
    assert "--allow-empty" in help_text("profiles").split("Exit codes:", 1)[1]


def test_a_bare_mpexport_prints_its_help_and_exits_0() -> None:
    import subprocess
    import sys

    from tests.helpers import clean_env

    proc = subprocess.run([sys.executable, "-m", "mpexport"], env=clean_env(),
                          capture_output=True, text=True)
    assert proc.returncode == 0
    assert proc.stdout.startswith("Usage: mpexport [OPTIONS] [COMMAND] [ARGS]...")
    assert "Commands:" in proc.stdout and proc.stderr == ""


def test_the_readme_shows_the_grouped_export_help() -> None:
    """As the command prints it in a terminal of any width (it stays within 80 columns)."""
    import subprocess
    import sys
    from pathlib import Path

    from tests.helpers import clean_env

    text = subprocess.run([sys.executable, "-m", "mpexport", "export", "--help"],
                          env=clean_env({"COLUMNS": "200"}), capture_output=True,
                          text=True, check=True).stdout
    options = text[text.index("Range and filters:"):text.index("\n\n  Credentials come")]
    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    assert f"```\n$ mpexport export --help\n...\n{options}\n...\n```" in readme


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
