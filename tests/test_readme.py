"""The README's examples run, as shown, against the built-in server.

The commands are read from README.md's fenced code blocks, so the README and
this test cannot drift apart: a new example line is run, or fails
``test_every_readme_line_is_run_or_skipped_with_a_reason`` until it is listed in
``SKIPPED`` with the reason it cannot run here.

Each line runs in bash (``-o pipefail``, so a pipeline fails when mpexport
does), in a fresh folder, with an ``mpexport`` on PATH that is the command
under test. Only what must change to reach the built-in server instead of
Mixpanel is rewritten (``REWRITES``, each with its reason); the lines keep
their dates, options and pipes. A line passes when it exits 0, what it
prints to stdout is not empty (for lines that print, ``prints``) and the
files it names as outputs exist and are not empty.

The built-in server's day is the real one (the README's ranges end at
``yesterday`` and ``today``), with 20 events a day and no long values: the
ranges that start at 2024-01-01 (about three years) then cost a few seconds.
"""

from __future__ import annotations

import contextlib
import re
import shlex
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from mpexport.fakeserver import (
    DEMO_OAUTH_TOKEN,
    DEMO_PROJECT_ID,
    DEMO_SECRET,
    DEMO_USERNAME,
    Dataset,
)
from tests.helpers import (
    PATIENCE,
    ServerFactory,
    clean_env,
    cli_command,
    service_account_env,
    wait_until,
)
from tests.s3server import S3Server

README = Path(__file__).resolve().parents[1] / "README.md"

# Lines of the README's code blocks that are not run, each with why. A key
# that ends in "..." skips its whole block (the key is the block's first line).
SKIPPED = {
    "make demo": "creates .venv and runs the demo: the demo itself is tested "
                 "(test_frozen_smoke, test_demo)",
    "make test": "runs the whole suite, this test included",
    "sha256sum -c --ignore-missing SHA256SUMS...":
        "a release's files, which exist only on GitHub (packaging/release.py makes them; "
        "make release-dry-run builds them here)",
    "pipx install mpexport                # an isolated command on PATH...":
        "installs from the package index into an environment (make dist installs the "
        "wheel into a clean venv)",
    "pip install .            # into the current environment": "installs into an environment",
    "pipx install .           # as an isolated command": "installs into an environment",
    "make exe                 # a standalone executable in dist/, from a hashed lock "
    "(packaging/README.md)":
        "builds the executable (packaging/run_frozen_tests.sh tests it)",
    "make dist                # the sdist and wheel in dist/, checked as a release checks "
    "them": "builds and installs the wheel (scripts/dist.sh; .ci/run runs it)",
    "pip install 'mpexport[lake]'          # object stores (the executable includes it)":
        "installs into an environment (the lake's extra is installed here)",
    "$ mpexport export --help...":
        "the grouped help as the command prints it (test_cli_help compares the two)",
    "mpexport sync --db FILE [--from DATE] [--to DATE] [--lookback DAYS]...":
        "a synopsis, not a command",
    "mpexport verify --db FILE [--table NAME] [--from DATE] [--to DATE]...":
        "a synopsis, not a command",
    "mpexport: DIFFERS: 1 counts on 1 days of 2024-05-01..2024-05-31 differ from Mixpanel "
    "(3 events missing, 0 extra)...": "sample output, not a command",
    'df = spark.read.parquet("s3a://my-bucket/mixpanel/events")      '
    "# 'date' from the folders...": "needs Spark, which is not installed here",
    'schtasks /Create /TN "mpexport sync" /SC DAILY /ST 06:15 /TR "C:\\Tools\\mpexport\\'
    'mpexport.exe sync --db C:\\Data\\events.duckdb --from 2024-01-01 --quiet --summary-json '
    'C:\\Data\\last-sync.json"': "Windows' Task Scheduler",
}


@dataclass(frozen=True)
class Rewrite:
    """One change a README line needs to run here, and why."""

    pattern: str
    replacement: str
    why: str


def rewrites(url: str, bucket: str) -> list[Rewrite]:
    """What changes in a README line to run against the built-in server and the test bucket."""
    return [
        Rewrite(r"^\d+ \* \* \* \*\s+", "", "a crontab line: its command, without the schedule"),
        Rewrite(r"/usr/local/bin/mpexport\b", "mpexport", "the command under test"),
        Rewrite(r"(?<![\w.])/data/", "data/", "folders of this test, not of the machine"),
        Rewrite(r"(?<![\w.])/var/log/mpexport/", "log/", "folders of this test"),
        Rewrite(r"\bmpexport (export|sync|profiles|check|verify)\b(?!.*--api-url)",
                rf"mpexport \1 --api-url {url}", "the built-in server instead of Mixpanel"),
        Rewrite(r"(mpexport fake-server .*)--port 8765\b", r"\1--port 0",
                "any free port: 8765 may be taken here"),
        Rewrite(r"--username sa\.\w+", f"--username {DEMO_USERNAME}",
                "the built-in server's service account"),
        Rewrite(r"--project-id 12345\b", f"--project-id {DEMO_PROJECT_ID}",
                "the built-in server's project"),
        Rewrite(r"\bs3://(my-)?bucket/", f"s3://{bucket}/", "the test's S3-compatible server"),
        Rewrite(r"--from 2024-01-01 (--to yesterday --parquet s3://)", r"--from -30 \1",
                "each day is one object on the test's S3 server: three years of days "
                "take half a minute there, 30 days a second"),
    ]


# Lines read what earlier lines wrote; where the README's order has a reader
# first (`mpexport sql` on events.duckdb, the lake, week.ndjson), these make
# the files first, with the README's own commands.
SETUP = [
    "mpexport export --from -30 --to yesterday --db events.duckdb",
    "mpexport export --from -7 --to yesterday --output week.ndjson",
    "mpexport export --from -7 --to yesterday --parquet lake/",
    "mpexport export --from -7 --to yesterday --parquet s3://bucket/events",
]

# Lines that read stdin: what the test types.
STDIN = {"mpexport config init --profile prod --username sa.export --project-id 12345   "
         "# asks for the secret": DEMO_SECRET + "\n"}

# What a line's stdout must hold beyond "something": every event has a
# browser, so a JSON path that misses the property shows as a NULL (None) row.
STDOUT = {r'''duckdb events.duckdb "SELECT properties->>'\$.\"\$browser\"' AS browser, '''
          "count(*) FROM events GROUP BY 1\"": r"\A(?:(?:Chrome|Safari|Firefox|Edge|"
          r"Mobile Safari|Samsung Internet)\t\d+\n)+\Z"}

# A line whose effect is not on stdout or in a file, checked by what follows it.
THEN = {'eval "$(_MPEXPORT_COMPLETE=bash_source mpexport)"   '
        "# shell completion (zsh_source, fish_source too)": "complete -p mpexport"}

# The library's examples reach the built-in server through api_url, added by
# this prelude (the examples themselves are run unchanged).
PYTHON_PRELUDE = """\
import functools
import mpexport
mpexport.export = functools.partial(mpexport.export, api_url={url!r})
mpexport.sync = functools.partial(mpexport.sync, api_url={url!r})
"""


@dataclass(frozen=True)
class Block:
    """One fenced code block of the README: its info string and its lines."""

    info: str
    lines: tuple[str, ...]

    @property
    def key(self) -> str:
        """The block's name in ``SKIPPED``: its first line and "..."."""
        return self.lines[0] + "..."


def blocks(text: str) -> list[Block]:
    """The fenced code blocks of a Markdown text, indented ones included."""
    found: list[Block] = []
    fence: str | None = None
    info = ""
    lines: list[str] = []
    for raw in text.splitlines():
        stripped = raw.strip()
        if fence is None:
            if stripped.startswith("```"):
                fence, info, lines = "```", stripped[3:].strip(), []
            continue
        if stripped == fence:
            # Without the indent of a block inside a list; Python keeps its own.
            text = textwrap.dedent("\n".join(lines))
            found.append(Block(info, tuple(line.rstrip() for line in text.splitlines())))
            fence = None
            continue
        lines.append(raw)
    assert fence is None, "an unclosed code block"
    return found


def shell_lines(all_blocks: list[Block]) -> Iterator[str]:
    """The lines of the shell blocks that are not comments, blank or skipped."""
    for block in all_blocks:
        if block.info == "python" or block.key in SKIPPED:
            continue
        for line in block.lines:
            if line and not line.startswith("#") and line not in SKIPPED:
                yield line


def python_blocks(all_blocks: list[Block]) -> list[Block]:
    """The Python blocks that are not skipped, in the README's order."""
    return [b for b in all_blocks if b.info == "python" and b.key not in SKIPPED]


def prints(line: str) -> bool:
    """True when the line's result is its stdout (a query, a count, data to the terminal)."""
    if re.search(r"(^|\s)(>|>>|-o|--output|--db|--parquet)\s", line) or "| gzip" in line:
        return False
    return bool(re.match(r"(mpexport (sql|export|profiles|--version|config show)|duckdb )",
                         line)) or "| jq" in line or "| wc" in line


def output_files(line: str) -> list[tuple[str, bool]]:
    """The files a line names as what it writes, each with whether it must hold something.

    A log a line appends to (``>> F``) may stay empty: ``--quiet`` prints nothing.
    """
    return [(name, op != ">>") for op, name in
            re.findall(r"(>>?|-o|--output|--db|--summary-json)\s+(\S+)", line)]


# -- the extraction: every line is run or skipped with a reason ------------------------


def test_every_readme_line_is_run_or_skipped_with_a_reason() -> None:
    all_blocks = blocks(README.read_text(encoding="utf-8"))
    keys = {b.key for b in all_blocks} | {line for b in all_blocks for line in b.lines}
    stale = [key for key in SKIPPED if key not in keys]
    assert stale == [], "SKIPPED names lines the README no longer has"
    assert all(reason for reason in SKIPPED.values())
    run = list(shell_lines(all_blocks))
    # The commands of every section that can run against the built-in server.
    for needle in ("mpexport --version", "mpexport config init", "mpexport check",
                   "mpexport fake-server", "mpexport verify",
                   "mpexport profiles", "mpexport sql", "mpexport sync", "duckdb events.duckdb",
                   "| jq", "--parquet s3://"):
        assert any(needle in line for line in run), needle
    assert [b.lines[0] for b in python_blocks(all_blocks)] == [
        "import mpexport", "import threading"]
    for line in [*SETUP, *STDIN, *THEN, *STDOUT]:
        assert line in run or line in SETUP


# -- running them ------------------------------------------------------------------------


def _bin(folder: Path) -> Path:
    """A PATH folder with ``mpexport`` (the command under test) and ``duckdb``.

    The duckdb CLI is not installed here: its stand-in runs the README's SQL
    with the duckdb module, the engine the CLI would use, and prints the rows.
    """
    folder.mkdir()
    mpexport = folder / "mpexport"
    mpexport.write_text(f'#!/bin/sh\nexec {shlex.join(cli_command())} "$@"\n')
    duckdb = folder / "duckdb"
    duckdb.write_text(
        f"#!{sys.executable}\n"
        "import sys\nimport duckdb\n"
        "with duckdb.connect(sys.argv[1]) as con:\n"
        "    for row in con.execute(sys.argv[2]).fetchall():\n"
        "        print('\\t'.join(map(str, row)))\n")
    for script in (mpexport, duckdb):
        script.chmod(0o755)
    return folder


def _rewritten(line: str, changes: list[Rewrite]) -> str:
    for change in changes:
        line = re.sub(change.pattern, change.replacement, line)
    return line


@contextlib.contextmanager
def _background(line: str, changes: list[Rewrite], env: dict[str, str],
                cwd: Path) -> Iterator[None]:
    """Start a line that ends with ``&`` (the README's fake-server); stop it on the way out.

    Its URL, read from its first line, replaces the README's from then on.
    """
    command = _rewritten(line, changes).removesuffix("&").strip()
    log = cwd / "background.log"
    with open(log, "wb") as stderr:
        proc = subprocess.Popen(["bash", "-c", f"exec {command}"], env=env, cwd=cwd,
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=stderr)
    try:
        wait_until(lambda: "listening on" in log.read_text(), f"{command} to listen",
                   proc=proc)
        url = re.search(r"listening on (http://\S+)", log.read_text())
        assert url, log.read_text()
        changes.append(Rewrite(r"http://127\.0\.0\.1:8765\b", url[1],
                               "the port the README's server got"))
        yield
    finally:
        proc.terminate()
        proc.wait(timeout=PATIENCE)


def _run_line(line: str, changes: list[Rewrite], env: dict[str, str], cwd: Path) -> list[str]:
    """Run one README line (rewritten); return what is wrong with the result."""
    command = _rewritten(line, changes)
    if line in THEN:
        command = f"{command} && {THEN[line]}"
    line_env = dict(env)
    if "--profile" in line or "MPEXPORT_PROFILE=" in line:
        # Credentials from the profile: MP_* beside --profile is refused as ambiguous.
        for name in service_account_env():
            line_env.pop(name, None)
    proc = subprocess.run(["bash", "-o", "pipefail", "-c", command], env=line_env, cwd=cwd,
                          input=STDIN.get(line, "").encode(), capture_output=True,
                          timeout=PATIENCE * 2)
    problems = []
    if proc.returncode != 0:
        stderr = proc.stderr.decode("utf-8", "replace").strip()
        problems.append(f"exit {proc.returncode}: {stderr[-800:]}")
    elif prints(line) and not proc.stdout.strip():
        problems.append("printed nothing")
    elif line in STDOUT and not re.match(STDOUT[line], proc.stdout.decode("utf-8")):
        problems.append(f"printed {proc.stdout.decode('utf-8')!r}")
    for name, filled in output_files(command):
        path = cwd / name
        if proc.returncode == 0 and not (path.is_file() and (path.stat().st_size or not filled)):
            problems.append(f"{name} was not written")
    return [f"{line}\n  ran: {command}\n  {problem}" for problem in problems]


@pytest.mark.skipif(sys.platform == "win32", reason="the README's shell lines are POSIX shell")
def test_the_readme_examples_run_against_the_built_in_server(
        make_server: ServerFactory, s3_server: S3Server, tmp_path: Path) -> None:
    dataset = Dataset(seed=11, events_per_day=20, long_values=False)
    # The real day: the README's ranges end at yesterday or today.
    from mpexport.fakeserver import ProfileDataset

    server = make_server(dataset, today=None, profiles=ProfileDataset(count=2500, groups=20))
    changes = rewrites(server.url, s3_server.bucket)
    cwd = tmp_path / "work"
    for folder in ("data", "log"):
        (cwd / folder).mkdir(parents=True)
    env = clean_env({**service_account_env(), **s3_server.env(), "SECRET": DEMO_SECRET,
                     "TOKEN": DEMO_OAUTH_TOKEN})
    env["PATH"] = f"{_bin(tmp_path / 'bin')}:{env['PATH']}"
    all_blocks = blocks(README.read_text(encoding="utf-8"))
    problems: list[str] = []
    with contextlib.ExitStack() as background:
        for line in [*SETUP, *shell_lines(all_blocks)]:
            if line.endswith("&"):
                background.enter_context(_background(line, changes, env, cwd))
            else:
                problems += _run_line(line, changes, env, cwd)
    source = PYTHON_PRELUDE.format(url=server.url) + "\n".join(
        "\n".join(block.lines) for block in python_blocks(all_blocks))
    proc = subprocess.run([sys.executable, "-c", source], env=env, cwd=cwd, capture_output=True,
                          timeout=PATIENCE * 2)
    if proc.returncode != 0:
        problems.append(f"the library's examples: exit {proc.returncode}: "
                        f"{proc.stderr.decode('utf-8', 'replace')[-1500:]}")
    assert problems == [], "\n\n".join(problems)
