"""Messages a newcomer meets in the first hour say what happened, in plain words.

Each item of the wording list: an option that needs another, the variables
that are set, what a re-read day's events are, the bar's units, errors about
``--output`` and a refused replace on POSIX, the summary of a stdout export.
"""

from __future__ import annotations

import datetime as dt
import errno
import io
import json
from pathlib import Path

import pytest

from mpexport.cli.main import run
from mpexport.errors import UsageError
from mpexport.fakeserver import Dataset
from tests.helpers import ServerFactory, run_cli


def test_one_option_that_needs_a_database_is_singular(capsys: pytest.CaptureFixture[str]) -> None:
    code = run(["export", "--from", "2024-06-01", "--to", "2024-06-01", "--refresh"])
    assert code == 2
    assert ("mpexport: error: --refresh needs --db FILE or --parquet DIR|URL"
            in capsys.readouterr().err)


def test_two_options_that_need_a_database_are_plural(capsys: pytest.CaptureFixture[str]) -> None:
    code = run(["export", "--from", "2024-06-01", "--to", "2024-06-01", "--refresh",
                "--table", "t"])
    assert code == 2
    assert "--table, --refresh need --db FILE" in capsys.readouterr().err


def test_the_variables_beside_a_profile_are_listed_as_a_sentence() -> None:
    from mpexport.config.resolve import resolve_credentials

    with pytest.raises(UsageError) as raised:
        resolve_credentials({"MP_USERNAME": "u", "MP_SECRET": "s"}, profile="prod")
    assert raised.value.message == (
        "--profile prod was given but MP_USERNAME and MP_SECRET are set in the environment, "
        "so which credentials to use is ambiguous")
    with pytest.raises(UsageError) as one:
        resolve_credentials({"MP_API_SECRET": "s"}, profile="prod")
    assert "but MP_API_SECRET is set in the environment" in one.value.message


def test_a_resynced_day_counts_its_events_as_already_stored() -> None:
    from mpexport.cli.report import RunReport, summary_line
    from mpexport.model import ExportResult, LoadStats

    report = RunReport(command="sync", database=Path("e.duckdb"), table="events")
    report.result = ExportResult(chunks_total=1, events=3112)
    report.load = LoadStats(chunks=1, duplicates_skipped=3112)
    line = summary_line(report)
    assert "3112 already stored" in line
    assert "duplicates" not in line


def test_the_events_bar_counts_events_exactly() -> None:
    from mpexport.cli.progress import BarProgress
    from mpexport.events import ChunkDone, PlanReady
    from mpexport.model import Chunk, CompletedChunk

    chunks = tuple(Chunk(i, dt.date(2024, 1, 1 + i), dt.date(2024, 1, 1 + i))
                   for i in range(2))
    stream = io.StringIO()
    progress = BarProgress(stream, mode="bars")
    progress(PlanReady(chunks, ()))
    progress(ChunkDone(CompletedChunk(chunks[0], Path("x"), 18, 100, "0" * 64, 1, 0.1)))
    progress(ChunkDone(CompletedChunk(chunks[1], Path("x"), 18000, 100, "0" * 64, 1, 0.1)))
    progress.close()
    text = stream.getvalue()
    assert "events: 18018 [" in text
    assert " events/s]" in text
    assert "ev/s" not in text.replace(" events/s", "") and "18.0" not in text


def test_an_output_error_names_the_file_given_not_a_temp_file(tmp_path: Path) -> None:
    from mpexport.sinks.output_file import ndjson_destination

    target = tmp_path / "missing" / "out.ndjson"
    with pytest.raises(UsageError) as raised, ndjson_destination(None, target, append=False):
        pass
    assert raised.value.message == (
        f"cannot write --output {target}: No such file or directory")


def test_a_refused_replace_on_posix_names_the_folder_not_windows_causes(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from mpexport import filelock
    from mpexport.sinks import output_file

    def refused(src: object, dst: object) -> None:
        raise PermissionError(errno.EPERM, "Operation not permitted", str(src), None, str(dst))

    monkeypatch.setattr(filelock, "WINDOWS", False)
    monkeypatch.setattr(output_file.os, "replace", refused)
    temporary, target = tmp_path / ".out.ndjson.tmp", tmp_path / "out.ndjson"
    failure = output_file._replace(temporary, target)
    assert failure is not None
    assert failure.hint == (
        f"the events are in {temporary}; check that you may replace files in {tmp_path} "
        "(its permissions; in a shared folder such as /tmp, who owns out.ndjson) and "
        "rename it")


def test_the_summary_of_a_stdout_export_names_no_table(make_server: ServerFactory,
                                                       tmp_path: Path) -> None:
    server = make_server(Dataset(seed=5, events_per_day=10))
    summary = tmp_path / "summary.json"
    result = run_cli(["export", "--api-url", server.url, "--from", "2024-06-01",
                      "--to", "2024-06-01", "--summary-json", str(summary)])
    assert result.code == 0, result.stderr
    report = json.loads(summary.read_text())
    assert report["output"] == "stdout" and report["table"] is None
