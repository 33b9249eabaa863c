"""``--output FILE``: the NDJSON written by mpexport itself, byte for byte, nothing on stdout."""

from __future__ import annotations

import datetime as dt
import json
import shlex
from collections import Counter
from pathlib import Path

from mpexport.fakeserver import Dataset
from tests.helpers import ServerFactory, day_chunks, expected_stdout, run_cli

START, END = dt.date(2024, 5, 1), dt.date(2024, 5, 9)
RANGE = ["--from", START.isoformat(), "--to", END.isoformat(), "--chunk-days", "3"]


def test_output_file_is_byte_exact_and_stdout_stays_empty(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    dataset = Dataset(seed=12, events_per_day=30, quiet_every=4)
    server = make_server(dataset, faults=("reset", "gzip_cut"))
    target = tmp_path / "events ü.ndjson"
    result = run_cli(["export", "--api-url", server.url, *RANGE, "--output", str(target)])
    assert result.code == 0, result.stderr
    assert result.stdout == b""
    assert target.read_bytes() == expected_stdout(dataset, day_chunks(START, END, 3))
    assert sorted(p.name for p in tmp_path.iterdir()) == [target.name]  # no temp file left


def test_an_early_failure_leaves_the_existing_file_alone(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    server = make_server(Dataset(seed=12, events_per_day=5))
    target = tmp_path / "keep.ndjson"
    target.write_bytes(b'{"event":"old"}\n')
    result = run_cli(["export", "--api-url", server.url, *RANGE, "--output", str(target)],
                     credentials=False)
    assert result.code == 3, result.stderr
    assert target.read_bytes() == b'{"event":"old"}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.ndjson"]


def test_the_printed_resume_command_appends_what_failed(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    dataset = Dataset(seed=13, events_per_day=20)
    failing = make_server(dataset, fail_dates=frozenset({dt.date(2024, 5, 5)}))
    target = tmp_path / "out.ndjson"
    summary = tmp_path / "summary.json"
    result = run_cli(["export", "--api-url", failing.url, *RANGE, "--retries", "0",
                      "--output", str(target), "--summary-json", str(summary)])
    assert result.code == 1
    [rerun] = json.loads(summary.read_text())["rerun"]
    argv = shlex.split(rerun)
    assert argv[argv.index("--output") + 1] == str(target) and "--append" in argv
    assert argv[argv.index("--from") + 1] == "2024-05-04"  # the failed chunk, whole
    healthy = make_server(dataset)
    argv[argv.index("--api-url") + 1] = healthy.url
    resumed = run_cli(argv[1:])
    assert resumed.code == 0, resumed.stderr
    lines = target.read_bytes().splitlines(keepends=True)
    assert Counter(lines) == Counter(dataset.lines_for_range(START, END))


def test_output_mistakes_are_one_line_usage_errors(tmp_path: Path) -> None:
    missing_dir = tmp_path / "nope" / "out.ndjson"
    cases = [
        (["--output", str(missing_dir)], "cannot write --output"),
        (["--append"], "--append needs --output"),
    ]
    for extra, message in cases:
        result = run_cli(["export", "--api-url", "http://127.0.0.1:9", *RANGE, *extra])
        assert result.code == 2, result.stderr
        assert message in result.stderr and "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
