"""End to end with data that looks like Mixpanel's: odd but legal events, stdout and DuckDB."""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterable
from pathlib import Path

from mpexport.fakeserver import Dataset, parse_line
from tests.helpers import ServerFactory, day_chunks, expected_stdout, run_cli, stored_keys

START = dt.date(2024, 6, 1)
END = dt.date(2024, 6, 4)
FAULTS = ("http500", "reset", "gzip_cut", "terminated_early_inline")
_LONE = re.compile("[\ud800-\udfff]")

Key = tuple[str, str | None, int, str | None]


def dataset() -> Dataset:
    # Every oddity several times a day, and a near-1 MB event on some days.
    return Dataset(seed=11, events_per_day=1500, profile="realistic", oddity_every=300,
                   big_event_every=2500)


def key_of(line: bytes) -> Key:
    props = parse_line(line)["properties"]
    distinct_id = props.get("distinct_id")
    insert_id = props.get("$insert_id")
    return (parse_line(line)["event"],
            None if distinct_id is None else str(distinct_id),
            int(props["time"]),
            None if insert_id is None else str(insert_id))


def refused_by_duckdb(line: bytes) -> bool:
    """Cut UTF-8 or a lone surrogate: what DuckDB's parser refuses in this data."""
    try:
        line.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return _LONE.search(json.dumps(parse_line(line), ensure_ascii=False)) is not None


def distinct(lines: Iterable[bytes]) -> set[Key]:
    return {key_of(line) for line in lines}


def test_realistic_data_exact_on_stdout_and_in_duckdb(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    data = dataset()
    lines = data.lines_for_range(START, END)
    assert sum(map(refused_by_duckdb, lines)) >= 8, "the data holds lines DuckDB refuses"
    assert max(map(len, lines)) > 900_000, "and a near-1 MB event"

    server = make_server(data, faults=FAULTS)
    out = run_cli(["export", "--api-url", server.url, "--from", START.isoformat(),
                   "--to", END.isoformat(), "--chunk-days", "1"])
    assert out.code == 0, out.stderr
    assert out.stdout == expected_stdout(data, day_chunks(START, END, 1)), "byte-exact"

    db = tmp_path / "events.duckdb"
    summary = tmp_path / "summary.json"
    loaded = run_cli(["export", "--api-url", server.url, "--from", START.isoformat(),
                      "--to", END.isoformat(), "--chunk-days", "2", "--db", str(db),
                      "--summary-json", str(summary)])
    assert loaded.code == 0, loaded.stderr
    keys = stored_keys(db)
    assert len(keys) == len(set(keys)), "a Mixpanel key is stored twice"
    assert set(keys) == distinct(lines)
    report = json.loads(summary.read_text())
    refused = {key_of(line) for line in lines if refused_by_duckdb(line)}
    assert report["repaired_events"] == len(refused)
    assert f"{len(refused)} repaired" in loaded.stderr
