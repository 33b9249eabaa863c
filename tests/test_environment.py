"""The environment is passed in: only the front reads the process's variables and streams.

The rule is read from the source (parsed, not imported), so a module that
starts reading ``os.environ`` deep in the stack fails here, and the
library's ``environment=`` is checked to steer a whole run.
"""

from __future__ import annotations

import ast
import datetime as dt
import io
import json
import sys
from collections import Counter
from pathlib import Path

import pytest

import mpexport
from mpexport.environment import LIBRARY_COMMAND, STATE_DIR_ENV, Environment, command_name
from mpexport.errors import UsageError
from mpexport.fakeserver import Dataset
from tests.helpers import ServerFactory, service_account_env
from tests.test_layers import PACKAGE, dotted, read_package

# What the front may read of the process, and the modules that are the front.
PROCESS = {"os": {"environ", "environb", "getenv", "getenvb"},
           "sys": {"stdin", "stdout", "stderr", "argv"}}
FRONT = ("cli", "api", "runner", "options", "config", "__main__")
# The one place below the front that reads the process: Environment.from_process.
BUILDER = "environment"
# Fronts that build an environment: those above, and mpexport.profiles (whose
# module lives with the profiles run, but is a library call like export's).
BUILDS = (*FRONT, "", "profile_export.api")


def _in(module: str, roots: tuple[str, ...]) -> bool:
    return any(module == root or module.startswith(f"{root}.") for root in roots)


def process_reads(source: str) -> list[tuple[int, str]]:
    """Where ``source`` reads the process's variables, streams or argv: (line, what)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                and node.attr in PROCESS.get(node.value.id, ())):
            found.append((node.lineno, f"{node.value.id}.{node.attr}"))
        elif isinstance(node, ast.ImportFrom) and node.module in PROCESS:
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names
                      if alias.name in PROCESS[node.module]]
    return found


def test_no_module_below_the_front_reads_the_process() -> None:
    modules = read_package()
    assert "pacing.hour" in modules  # the package was found
    offenders = [f"{dotted(name)}:{line} reads {what}"
                 for name, source in sorted(modules.items())
                 if not _in(name, (*FRONT, "fakeserver", BUILDER))
                 for line, what in process_reads(source)]
    assert offenders == [], "take it from the run's Environment instead"


def test_only_the_front_builds_the_environment_of_the_process() -> None:
    builders = sorted(name for name, source in read_package().items()
                      if "from_process(" in source and name != BUILDER)
    assert builders and all(_in(name, BUILDS) for name in builders), builders


@pytest.mark.parametrize("source", [
    "import os\nos.environ.get('X')\n",
    "import sys\nsys.stdout.buffer.write(b'')\n",
    "from os import environ\n",
    "import sys\nword = sys.argv[1]\n",
    "import os\nos.getenv('X')\n",
])
def test_the_check_sees_each_way_of_reading_the_process(source: str) -> None:
    assert process_reads(source)


def test_the_check_leaves_the_rest_of_os_and_sys_alone() -> None:
    assert process_reads("import os, sys\nos.getpid()\nsys.platform\nos.replace('a', 'b')\n") == []
    assert (PACKAGE / "environment.py").exists()


# ------------------------------------------------------------------ the value


@pytest.mark.parametrize(("argv", "expected"), [
    (["mpexport", "sync", "--db", "x"], "mpexport sync"),
    (["mpexport", "profiles"], "mpexport profiles"),
    (["job.py", "--token=abc123"], LIBRARY_COMMAND),
    (["mpexport"], LIBRARY_COMMAND),
    ([], LIBRARY_COMMAND),
])
def test_the_command_name_is_one_word_of_ours_never_argv(argv: list[str],
                                                         expected: str) -> None:
    assert command_name(argv) == expected


def test_from_process_reads_the_process_when_called(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(STATE_DIR_ENV, str(tmp_path / "state"))
    monkeypatch.setattr(sys, "argv", ["mpexport", "export", "--from", "-1"])
    environment = Environment.from_process()
    assert environment.state_dir == tmp_path / "state"
    assert environment.command_name == "mpexport export"
    assert environment.stderr is sys.stderr


def test_of_takes_the_state_folder_from_the_given_variables(tmp_path: Path) -> None:
    environment = Environment.of({STATE_DIR_ENV: str(tmp_path)}, command_name="mpexport sync")
    assert environment.state_dir == tmp_path and environment.command_name == "mpexport sync"
    assert environment.stdout is None  # nothing of the process unless given


def test_the_machine_is_read_at_the_front_and_can_be_given() -> None:
    import os

    environment = Environment.from_process()
    assert environment.cpus is not None and 1 <= environment.cpus <= (os.cpu_count() or 1)
    assert environment.memory_bytes is not None and environment.memory_bytes > 64 * 1024**2
    assert Environment.of({}).cpus == environment.cpus  # a library call runs on this machine
    given = Environment.of({}, cpus=16, memory_bytes=64 * 1024**3)
    assert (given.cpus, given.memory_bytes) == (16, 64 * 1024**3)


@pytest.mark.parametrize(("environ", "memory_limit", "said"), [
    ({}, None, "loader budget 2135MB, 15 threads: the default for 16 cores and 64.0 GiB"),
    ({"MPEXPORT_MEMORY_LIMIT": "512MB"}, None,
     "loader budget 512MB, 3 threads: set by MPEXPORT_MEMORY_LIMIT"),
    ({"MPEXPORT_MEMORY_LIMIT": "512MB"}, "1GB",
     "loader budget 1GB, 7 threads: set by --memory-limit"),
])
def test_a_database_run_chooses_its_budget_for_its_machine_once(
    make_server: ServerFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture,
    environ: dict[str, str], memory_limit: str | None, said: str,
) -> None:
    """The environment's machine sets the default; the variable and the option still win."""
    server = make_server(Dataset(seed=5, events_per_day=5))
    environment = Environment.of({**service_account_env(), STATE_DIR_ENV: str(tmp_path / "s"),
                                  "MPEXPORT_QPS_LIMIT": "100", **environ},
                                 cpus=16, memory_bytes=64 * 1024**3)
    with caplog.at_level("INFO", logger="mpexport"):
        result = mpexport.export("2024-04-01", "2024-04-01", api_url=server.url,
                                 db=tmp_path / "e.duckdb", memory_limit=memory_limit,
                                 environment=environment)
    assert result.ok
    assert [r.getMessage() for r in caplog.records if "loader budget" in r.getMessage()] == [said]


# ------------------------------------------------------------------ a run steered by it


def test_a_library_call_takes_variables_stdout_and_state_from_its_environment(
    make_server: ServerFactory, tmp_path: Path, isolated_state: Path
) -> None:
    """No MP_* in os.environ and no output: the environment given supplies all of it."""
    dataset = Dataset(seed=5, events_per_day=20)
    server = make_server(dataset)
    stdout = io.BytesIO()
    state = tmp_path / "own-state"
    environment = Environment.of({**service_account_env(), STATE_DIR_ENV: str(state),
                                  "MPEXPORT_QPS_LIMIT": "100"}, stdout=stdout)
    result = mpexport.export("2024-04-01", "2024-04-03", api_url=server.url,
                             environment=environment)
    expected = dataset.lines_for_range(dt.date(2024, 4, 1), dt.date(2024, 4, 3))
    assert Counter(stdout.getvalue().splitlines(keepends=True)) == Counter(expected)
    assert result.ok
    (budget,) = state.glob("ratelimit-*.json")  # the hour is counted where it said
    assert len(json.loads(budget.read_text())["starts"]) == result.chunks_total
    assert not list(isolated_state.glob("ratelimit-*.json"))  # not the process's folder


def test_a_run_without_a_binary_stdout_says_so(make_server: ServerFactory) -> None:
    server = make_server()
    environment = Environment.of(service_account_env())  # a notebook's: no stdout.buffer
    with pytest.raises(UsageError, match="no binary stdout"):
        mpexport.export("2024-04-01", "2024-04-01", api_url=server.url,
                        environment=environment)
    assert len(server.stats) == 0
