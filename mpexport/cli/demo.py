"""``mpexport demo``: the main job against the built-in server, self-checking."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

from mpexport.cli.progress import BarProgress
from mpexport.cli.shell import quoted_commands
from mpexport.dates import utc_today
from mpexport.mixpanel.credentials import Credentials
from mpexport.mixpanel.transport import FetchSettings
from mpexport.options import RunOptions
from mpexport.request import build_request
from mpexport.runner import run
from mpexport.verify.model import VerifyResult

# Every kind of truncation and failure the real API is known for, each on the
# first attempt of some chunk: the demo shows that none of it leaks through.
DEMO_FAULTS = (
    "reset",
    "gzip_cut",
    "terminated_early_line",
    "http503",
    "export_terminated_early_line",
    "terminated_early_inline",
    "http429",
)


def mixpanel_keys(lines: Iterable[bytes]) -> set[tuple[str, str, int, str]]:
    """The distinct (event, distinct_id, time, $insert_id) keys of NDJSON lines."""
    keys = set()
    for line in lines:
        record = json.loads(line)
        props = record["properties"]
        keys.add((record["event"], props["distinct_id"], int(props["time"]),
                  props["$insert_id"]))
    return keys


def program_words(
    argv0: str,
    executable: str,
    frozen: bool,
    which: Callable[[str], str | None] = shutil.which,
) -> list[str]:
    """The words that run this mpexport again, typed in the same folder: ``mpexport`` if it can.

    ``make demo`` runs ``.venv/bin/mpexport``, which is not on PATH: a
    suggestion that says only ``mpexport`` is "command not found" as typed.
    So the suggestion names the program this process runs (the console
    script as it was invoked, the frozen executable, or this Python with
    ``-m mpexport``), and plain ``mpexport`` only when PATH finds that same file.
    """
    if frozen:
        program = executable
    elif Path(argv0).stem == "mpexport" and Path(argv0).is_file():
        program = argv0
    else:
        # `python -m mpexport` (argv0 is the package's __main__.py): this
        # interpreter has the package; an `mpexport` on PATH may be another install.
        return [executable, "-m", "mpexport"]
    found = which("mpexport")
    if found is not None and _same_file(found, program):
        return ["mpexport"]
    # As invoked when it has a folder part (`.venv/bin/mpexport` runs as typed
    # from the folder the user is in); absolute otherwise.
    return [program if os.path.dirname(program) else os.path.abspath(program)]


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _path_hint(words: list[str]) -> str:
    """How to type plain ``mpexport`` next time, when the suggestion could not use it."""
    if words[0] == "mpexport":
        return ""
    folder = Path(words[0]).parent
    if words[1:2] != ["-m"] and (folder / "activate").is_file():
        return (f" (`mpexport` alone is not on PATH: `. {folder / 'activate'}` puts it there "
                "for this shell)")
    return " (`mpexport` alone is not on PATH here; see the README's Install section)"


def try_lines(path: Path, words: list[str] | None = None) -> list[str]:
    """The demo's closing suggestion: a query of its file, as a command that runs as typed."""
    if words is None:
        words = program_words(sys.argv[0], sys.executable, bool(getattr(sys, "frozen", False)))
    query = "SELECT event, count(*) FROM events GROUP BY 1 ORDER BY 2 DESC"
    return [f"demo: try it{_path_hint(words)}:",
            *quoted_commands([[*words, "sql", str(path), query]])]


def _verify(path: Path, url: str, credentials: Credentials, start: dt.date,
            end: dt.date) -> VerifyResult:
    """``mpexport verify`` of the demo's table against the built-in server's counts."""
    from mpexport.environment import Environment
    from mpexport.startup import RunSetup
    from mpexport.verify.options import VerifyOptions
    from mpexport.verify.runner import run_verify

    options = VerifyOptions(db=path, from_date=start, to_date=end, api_url=url, qps_limit=50,
                            hourly_limit=10_000)
    return run_verify(options, setup=RunSetup(Environment.from_process(),
                                              credentials=credentials, share_hour=False))


def run_demo(
    *,
    days: int,
    events_per_day: int,
    output: str,
    progress: bool | None,
    echo: Callable[[str], None],
) -> int:
    """Serve, export into DuckDB, check the table against the server; return the exit code."""
    import duckdb

    from mpexport.fakeserver import (
        DEMO_OAUTH_TOKEN,
        DEMO_PROJECT_ID,
        DEMO_SECRET,
        DEMO_USERNAME,
        Dataset,
        FakeMixpanelServer,
        ServerConfig,
    )

    today = utc_today()
    start = today - dt.timedelta(days=days)
    end = today - dt.timedelta(days=1)
    dataset = Dataset(seed=2024, events_per_day=events_per_day, quiet_every=17)
    config = ServerConfig(dataset=dataset, faults=DEMO_FAULTS, ttfb=0.05)
    credentials = Credentials(username=DEMO_USERNAME, secret=DEMO_SECRET,
                              project_id=DEMO_PROJECT_ID)
    # The check authenticates with an OAuth bearer token, so the demo covers
    # both kinds Mixpanel keeps after project secrets retire.
    token = Credentials(oauth_token=DEMO_OAUTH_TOKEN, project_id=DEMO_PROJECT_ID)
    path = Path(output)
    with FakeMixpanelServer(config) as server:
        echo(f"demo: built-in Mixpanel-compatible server at {server.url}, "
             f"faults on first attempts: {', '.join(DEMO_FAULTS)}")
        # The built-in server has no rate limits, and its budget is not worth
        # remembering across runs, so the demo lifts both.
        options = RunOptions(from_date=start, to_date=end, api_url=server.url, chunk_days=3,
                             qps_limit=50, hourly_limit=10_000, db=path)
        request = build_request(options)
        echo(f"demo: exporting {start}..{end} in {len(request.plan())} chunks "
             f"with {request.workers} workers into {path} (table events)")
        show_bars = sys.stderr.isatty() if progress is None else progress
        bars = BarProgress(sys.stderr, mode="bars" if show_bars else "lines")
        try:
            result = run("export", options, credentials=credentials, progress=bars,
                         settings=FetchSettings(backoff_base=0.2, backoff_cap=2.0),
                         share_hour=False)
        finally:
            bars.close()
        expected = mixpanel_keys(dataset.lines_for_range(start, end))
        checked = _verify(path, server.url, token, start, end)
    stats = result.load
    assert stats is not None
    retries = sum(c.attempts - 1 for c in result.completed)
    echo(f"demo: {stats.rows_inserted} events loaded, {stats.duplicates_skipped} duplicates "
         f"skipped, {len(result.completed)}/{result.chunks_total} chunks fetched "
         f"({len(result.skipped)} already loaded), {retries} retried attempts, "
         f"{result.bytes / 1e6:.1f} MB in {result.seconds:.1f}s")
    with duckdb.connect(str(path), read_only=True) as con:
        rows = con.execute(
            "SELECT event, distinct_id, epoch(time)::BIGINT, insert_id FROM events "
            "WHERE time >= ?::TIMESTAMPTZ AND time < ?::TIMESTAMPTZ",
            [f"{start.isoformat()} 00:00:00+00", f"{today.isoformat()} 00:00:00+00"],
        ).fetchall()
    got = set(rows)
    echo(f"demo: verify: {checked.compared} daily counts of {len(checked.names)} events "
         f"compared with the server's Query API in {checked.queries} queries "
         "(with an OAuth bearer token): "
         + ("all match" if checked.matches else
            f"{len(checked.differences)} differ on {len(checked.differing_days)} days"))
    if result.ok and got == expected and len(rows) == len(expected) and checked.matches:
        echo(f"demo: OK: {path} holds exactly the server's {len(expected)} distinct events, "
             "each once.")
        for line in try_lines(path):
            echo(line)
        return 0
    echo(f"demo: MISMATCH: {len(rows)} rows stored, {len(expected)} distinct events expected")
    return 1
