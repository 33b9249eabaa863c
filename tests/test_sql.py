"""``mpexport sql``: queries over a real exported file, through the real CLI.

Every test builds its DuckDB file with ``mpexport export --db`` against the
built-in server, then runs ``mpexport sql`` as a subprocess and checks what
it printed against DuckDB's own answer to the same query.
"""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import duckdb
import pytest

from mpexport.cli.sql import FORMATS as CLI_FORMATS
from mpexport.fakeserver import Dataset
from mpexport.sinks.duckdb.lock import database_lock, lock_path
from mpexport.sql.database import BATCH_ROWS, open_read_only
from mpexport.sql.formats import FORMATS
from tests.helpers import (
    HOLD_SERVER,
    PATIENCE,
    CliResult,
    HeldDataset,
    ServerFactory,
    clean_env,
    cli_command,
    run_cli,
    service_account_env,
)
from tests.s3server import S3Server

START = dt.date(2024, 5, 1)
END = dt.date(2024, 5, 20)
COLUMNS = "event, distinct_id, time, insert_id, mp_processing_time_ms, properties"
ALL_ROWS = f"SELECT {COLUMNS} FROM events ORDER BY time, insert_id"


def test_cli_offers_every_format() -> None:
    assert FORMATS == CLI_FORMATS


def export_db(url: str, db: Path, *extra: str) -> None:
    result = run_cli(["export", "--api-url", url, "--from", START.isoformat(),
                      "--to", END.isoformat(), "--db", str(db), *extra])
    assert result.code == 0, result.stderr


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Where the module's exported file is, once the first test made it."""
    return {"dir": tmp_path_factory.mktemp("exported")}


def export_all(make_server: ServerFactory, exported: dict[str, Path]) -> None:
    """The module's exports, once: a DuckDB file with its lake, and an NDJSON file.

    All from one server, so the three hold the same events.
    """
    if "file" in exported:
        return
    server = make_server(Dataset(seed=31, events_per_day=150))
    export_db(server.url, exported["dir"] / "events.duckdb",
              "--parquet", str(exported["dir"] / "lake"))
    result = run_cli(["export", "--api-url", server.url, "--from", START.isoformat(),
                      "--to", END.isoformat(), "--output", str(exported["dir"] / "nov.ndjson")])
    assert result.code == 0, result.stderr
    exported["file"] = exported["dir"] / "events.duckdb"


@pytest.fixture
def db(make_server: ServerFactory, tmp_path: Path, exported: dict[str, Path]) -> Path:
    """A DuckDB file written by a real export: about 3000 events over 20 days.

    Exported once per module; each test gets its own copy to query (or spoil).
    """
    export_all(make_server, exported)
    path = tmp_path / "events.duckdb"
    shutil.copyfile(exported["file"], path)
    return path


@pytest.fixture
def lake(make_server: ServerFactory, tmp_path: Path, exported: dict[str, Path]) -> Path:
    """The lake folder the DuckDB file's export wrote beside it (``--parquet``), a copy."""
    export_all(make_server, exported)
    path = tmp_path / "lake"
    shutil.copytree(exported["dir"] / "lake", path)
    return path


@pytest.fixture
def ndjson_file(make_server: ServerFactory, tmp_path: Path, exported: dict[str, Path]) -> Path:
    """The same days exported as NDJSON (``--output``), a copy."""
    export_all(make_server, exported)
    path = tmp_path / "nov.ndjson"
    shutil.copyfile(exported["dir"] / "nov.ndjson", path)
    return path


def sql(db: Path | str, *args: str, env: dict[str, str] | None = None) -> CliResult:
    return run_cli(["sql", str(db), *args], credentials=False, env=env)


def duckdb_rows(db: Path, query: str) -> list[tuple[Any, ...]]:
    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute(query).fetchall()


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def output_lines(text: str) -> list[str]:
    """Lines as mpexport ends them: at ``\\n`` only (data may hold U+2028 and the like)."""
    assert text.endswith("\n")
    return text[:-1].split("\n")


def assert_one_error_line(result: CliResult, code: int, *words: str) -> None:
    assert result.code == code, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("mpexport: error: ")
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in lines[0]


def normalized(row: dict[str, Any] | list[str], *, from_csv: bool = False) -> tuple[Any, ...]:
    """A parsed output row as DuckDB's Python values compare (JSON as parsed objects)."""
    values = list(row.values()) if isinstance(row, dict) else list(row)
    event, distinct_id, time, insert_id, processing, properties = values
    if from_csv:
        processing = int(processing) if processing != "" else None
        properties = json.loads(properties)
    return (event, distinct_id, dt.datetime.fromisoformat(time), insert_id, processing,
            properties)


def expected_rows(db: Path) -> list[tuple[Any, ...]]:
    return [(*row[:5], json.loads(row[5])) for row in duckdb_rows(db, ALL_ROWS)]


# -- formats ---------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["csv", "json", "ndjson"])
def test_script_formats_parse_back_to_duckdbs_answer(db: Path, fmt: str) -> None:
    result = sql(db, ALL_ROWS, "--format", fmt)
    assert result.code == 0, result.stderr
    assert result.stderr == ""
    text = result.stdout.decode("utf-8")
    if fmt == "csv":
        assert text.startswith(",".join(name.strip() for name in COLUMNS.split(",")) + "\n")
        reader = csv.reader(io.StringIO(text, newline=""))
        header = next(reader)
        assert header == [name.strip() for name in COLUMNS.split(",")]
        got = [normalized(row, from_csv=True) for row in reader]
    elif fmt == "json":
        got = [normalized(row) for row in json.loads(text)]
    else:
        assert text.endswith("\n")
        got = [normalized(json.loads(line)) for line in output_lines(text)]
    assert got == expected_rows(db)
    # The properties column is a JSON object in the output, not a string.
    if fmt != "csv":
        first = json.loads(text)[0] if fmt == "json" else json.loads(output_lines(text)[0])
        assert isinstance(first["properties"], dict)


def table_cells(lines: list[str]) -> list[list[str]]:
    """Cut a table's lines at the column spans its dashed rule shows."""
    rule = lines[1]
    spans: list[tuple[int, int]] = []
    start = None
    for i, char in enumerate(rule + " "):
        if char == "-" and start is None:
            start = i
        elif char != "-" and start is not None:
            spans.append((start, i))
            start = None
    assert rule.replace("-", "").strip() == ""
    return [[line[a:b].strip() for a, b in spans] for line in [lines[0], *lines[2:]]]


def test_table_is_aligned_and_counts_rows(db: Path) -> None:
    query = "SELECT event, count(*) AS n FROM events GROUP BY 1 ORDER BY 2 DESC, 1"
    result = sql(db, query)  # table is the default
    assert result.code == 0, result.stderr
    lines = output_lines(result.stdout.decode("utf-8"))
    expected = duckdb_rows(db, query)
    assert lines[-1] == f"({len(expected)} rows)"
    cells = table_cells(lines[:-1])
    assert cells[0] == ["event", "n"]
    assert [(event, int(n)) for event, n in cells[1:]] == expected
    # Numbers are right-aligned: each count ends where its column ends.
    width = len(lines[1])
    assert all(len(line) == width for line in lines[2:-1])


def test_json_values_are_natural(db: Path) -> None:
    query = """SELECT 1.50::DECIMAL(10, 2) AS price, '\\xAA\\x00'::BLOB AS raw, [1, 2] AS list,
        {'a': 1, 'b': 'x'} AS struct, 'nan'::DOUBLE AS nan, NULL AS nothing, true AS yes,
        DATE '2024-05-01' AS day, TIMESTAMPTZ '2024-05-01 12:30:00+02' AS at,
        TIMESTAMP '2024-05-01 12:30:00' AS naive, '{"k": [1, 2.5]}'::JSON AS doc,
        ['{"x": 1}'::JSON] AS docs, INTERVAL '1 day 2 hours 3.5 seconds' AS span,
        'ta\tb "q" é 🍵' AS text, 12345678901234567890::HUGEINT AS big"""
    result = sql(db, query, "--format", "ndjson")
    assert result.code == 0, result.stderr
    assert json.loads(result.stdout) == {
        "price": 1.5, "raw": "qgA=", "list": [1, 2], "struct": {"a": 1, "b": "x"},
        "nan": None, "nothing": None, "yes": True, "day": "2024-05-01",
        "at": "2024-05-01T10:30:00+00:00", "naive": "2024-05-01T12:30:00",
        "doc": {"k": [1, 2.5]}, "docs": [{"x": 1}], "span": "P1DT2H3.5S",
        "text": 'ta\tb "q" é 🍵', "big": 12345678901234567890,
    }
    # Decimals keep their digits: a number, written as DuckDB holds it.
    assert b'"price":1.50' in result.stdout


# -- streaming ---------------------------------------------------------------------------


def test_more_rows_than_a_batch_all_arrive_with_the_right_count(db: Path) -> None:
    total = duckdb_rows(db, "SELECT count(*) FROM events")[0][0]
    assert total > BATCH_ROWS  # the fixture's file spans several batches
    table = sql(db, "SELECT insert_id, event FROM events ORDER BY insert_id")
    assert table.code == 0, table.stderr
    lines = output_lines(table.stdout.decode("utf-8"))
    assert lines[-1] == f"({total} rows)"
    assert len(lines) == total + 3  # header, rule, rows, count
    ndjson = sql(db, "SELECT insert_id FROM events ORDER BY insert_id", "--format", "ndjson")
    ids = [json.loads(line)["insert_id"] for line in output_lines(ndjson.stdout.decode())]
    assert ids == [row[0] for row in duckdb_rows(db, "SELECT insert_id FROM events "
                                                     "ORDER BY insert_id")]


def test_table_columns_are_sized_by_the_first_batch(db: Path) -> None:
    # Values after the first batch are longer than any in it: cut to fit.
    query = (f"SELECT CASE WHEN range < {BATCH_ROWS} THEN 'a' ELSE repeat('b', 30) END "
             f"AS value FROM range({BATCH_ROWS + 5})")
    result = sql(db, query)
    assert result.code == 0, result.stderr
    lines = output_lines(result.stdout.decode("utf-8"))
    assert lines[:3] == ["value", "-----", "a"]
    assert lines[-6:] == ["bbbb…"] * 5 + [f"({BATCH_ROWS + 5} rows)"]


# -- --output ----------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_output_file_holds_stdouts_bytes(db: Path, tmp_path: Path, fmt: str) -> None:
    query = "SELECT event, time, properties FROM events ORDER BY time, insert_id LIMIT 50"
    stdout = sql(db, query, "--format", fmt)
    assert stdout.code == 0, stdout.stderr
    target = tmp_path / f"out.{fmt}"
    target.write_bytes(b"old")
    to_file = sql(db, query, "--format", fmt, "--output", str(target))
    assert to_file.code == 0, to_file.stderr
    assert to_file.stdout == b""
    assert target.read_bytes() == stdout.stdout
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_failed_query_leaves_an_existing_output_alone(db: Path, tmp_path: Path) -> None:
    target = tmp_path / "out.csv"
    target.write_bytes(b"keep me\n")
    # Fails while rows stream, after the first batch was written.
    query = (f"SELECT CASE WHEN range < {BATCH_ROWS * 2} THEN range::VARCHAR "
             "ELSE 'x' END::INT AS n FROM range(100000)")
    result = sql(db, query, "--format", "csv", "--output", str(target))
    assert_one_error_line(result, 2, "Conversion Error")
    assert target.read_bytes() == b"keep me\n"
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_output_cannot_go_into_the_lake_or_replace_the_ndjson_file(lake: Path,
                                                                    ndjson_file: Path) -> None:
    before = tree(lake)
    day = lake / f"date={START.isoformat()}" / "data.parquet"
    result = sql(lake, "SELECT 1", "--output", str(day))
    assert_one_error_line(result, 2, f"--output {day} is inside the lake {lake}")
    assert tree(lake) == before
    digest_before = digest(ndjson_file)
    result = sql(ndjson_file, "SELECT 1", "--output", str(ndjson_file))
    assert_one_error_line(result, 2, f"--output {ndjson_file} is the input's own file")
    assert digest(ndjson_file) == digest_before


def test_output_cannot_replace_the_database(db: Path) -> None:
    before = digest(db)
    result = sql(db, "SELECT 1", "--output", str(db))
    assert_one_error_line(result, 2, "--output")
    assert digest(db) == before


# -- refused input -----------------------------------------------------------------------


@pytest.mark.parametrize("statement", [
    "DELETE FROM events",
    "CREATE TABLE other (a INTEGER)",
    "INSERT INTO events (event) VALUES ('x')",
])
def test_write_statement_refused_file_unchanged(db: Path, statement: str) -> None:
    before = digest(db)
    result = sql(db, statement)
    assert_one_error_line(result, 2, "read-only")
    assert result.stdout == b""
    assert digest(db) == before
    assert not Path(f"{db}.wal").exists()


@pytest.mark.parametrize(("query", "complaint"), [
    ("SELEC event FROM events", "Parser Error"),
    ("SELECT * FROM no_such_table", "Catalog Error"),
    ("SELECT nope FROM events", "Binder Error"),
])
def test_bad_query_is_one_line_exit_2(db: Path, query: str, complaint: str) -> None:
    result = sql(db, query)
    assert_one_error_line(result, 2, complaint)
    assert result.stdout == b""


def test_missing_file_is_exit_2_and_nothing_is_created(tmp_path: Path) -> None:
    missing = tmp_path / "nope.duckdb"
    result = sql(missing, "SELECT 1")
    assert_one_error_line(result, 2, str(missing))
    assert list(tmp_path.iterdir()) == []


NOT_A_DATABASE = ("mpexport: error: {} exists but is not a DuckDB database (give a DuckDB "
                  "file, a lake folder or URL, or an NDJSON export file; the file was not "
                  "changed)")


@pytest.mark.parametrize("content", [b"a,b\n1,2\n", b"", b"\x00\x01 binary"])
def test_not_a_database_says_what_export_db_says(tmp_path: Path, content: bytes) -> None:
    text = tmp_path / "notes.csv"
    text.write_bytes(content)
    for args in (["SELECT 1"], ["--tables"]):
        result = sql(text, *args)
        assert_one_error_line(result, 2)
        assert result.stderr.strip() == NOT_A_DATABASE.format(text)
    # export --db says the same of this file, before the hint.
    export = run_cli(["export", "--api-url", "http://127.0.0.1:9", "--from", "2024-05-01",
                      "--to", "2024-05-01", "--db", str(text)])
    assert export.code == 2
    assert export.stderr.startswith(NOT_A_DATABASE.format(text).split(" (")[0] + " (")
    assert text.read_bytes() == content
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.csv"]


@pytest.mark.parametrize("args", [[], ["SELECT 1", "--tables"], ["  "]])
def test_query_or_tables_needed(db: Path, args: list[str]) -> None:
    assert_one_error_line(sql(db, *args), 2)


# -- --tables ----------------------------------------------------------------------------


def test_tables_lists_rows_and_utc_day_range(db: Path) -> None:
    with duckdb.connect(str(db)) as con:
        # A table without a time column, one in another schema, one empty.
        con.execute("CREATE TABLE notes AS SELECT range AS n FROM range(7)")
        con.execute("CREATE SCHEMA extra")
        con.execute("CREATE TABLE extra.empty (time TIMESTAMPTZ)")
    result = sql(db, "--tables", "--format", "json")
    assert result.code == 0, result.stderr
    rows = {row["table"]: row for row in json.loads(result.stdout)}
    total, first, last = duckdb_rows(
        db, "SELECT count(*), min(time), max(time) FROM events")[0]
    assert rows == {
        "events": {"table": "events", "rows": total,
                   "first_day": first.astimezone(dt.UTC).date().isoformat(),
                   "last_day": last.astimezone(dt.UTC).date().isoformat()},
        "notes": {"table": "notes", "rows": 7, "first_day": None, "last_day": None},
        "extra.empty": {"table": "extra.empty", "rows": 0, "first_day": None,
                        "last_day": None},
    }
    assert (rows["events"]["first_day"], rows["events"]["last_day"]) == (
        START.isoformat(), END.isoformat())
    table = sql(db, "--tables")
    assert table.code == 0, table.stderr
    lines = output_lines(table.stdout.decode("utf-8"))
    assert table_cells(lines[:-1])[0] == ["table", "rows", "first_day", "last_day"]
    assert lines[-1] == "(3 rows)"


# -- where the data is: a lake folder, a lake on S3, an NDJSON file ---------------------


def tree(root: Path) -> dict[str, str]:
    """Every file under ``root``, by relative path, with its digest."""
    return {p.relative_to(root).as_posix(): digest(p) for p in root.rglob("*") if p.is_file()}


def same_rows(ndjson: bytes, expected: bytes) -> bool:
    """The same NDJSON lines, byte for byte, in any order (rows may tie on time and id)."""
    lines = output_lines(ndjson.decode("utf-8"))
    assert len(lines) > BATCH_ROWS  # every event, in more than one batch
    return sorted(lines) == sorted(output_lines(expected.decode("utf-8")))


def utc_days(db: Path) -> list[tuple[Any, ...]]:
    return duckdb_rows(db, "SELECT (time AT TIME ZONE 'UTC')::DATE, count(*) FROM events "
                           "GROUP BY 1 ORDER BY 1")


def events_table(db: Path) -> list[dict[str, Any]]:
    """What --tables says of a lake or an NDJSON file: the events view, like the database's."""
    total = duckdb_rows(db, "SELECT count(*) FROM events")[0][0]
    return [{"table": "events", "rows": total, "first_day": START.isoformat(),
             "last_day": END.isoformat()}]


def private_temp(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """An empty temp folder for the subprocess, to see what it leaves there."""
    folder = tmp_path / "system-temp"
    folder.mkdir()
    return folder, {"TMPDIR": str(folder), "TEMP": str(folder), "TMP": str(folder)}


def test_lake_folder_is_the_events_view_with_its_days(db: Path, lake: Path,
                                                       tmp_path: Path) -> None:
    before = tree(lake)
    temp, env = private_temp(tmp_path)
    from_db = sql(db, ALL_ROWS, "--format", "ndjson")
    from_lake = sql(lake, ALL_ROWS, "--format", "ndjson", env=env)
    assert from_lake.code == 0, from_lake.stderr
    assert from_lake.stderr == ""
    assert same_rows(from_lake.stdout, from_db.stdout)
    days = sql(lake, "SELECT date, count(*) AS n FROM events GROUP BY 1 ORDER BY 1",
               "--format", "csv", env=env)
    assert days.code == 0, days.stderr
    assert days.stdout.decode() == "date,n\n" + "".join(f"{d},{n}\n" for d, n in utc_days(db))
    tables = sql(lake, "--tables", "--format", "json", env=env)
    assert tables.code == 0, tables.stderr
    assert json.loads(tables.stdout) == events_table(db)
    assert tree(lake) == before
    assert list(temp.iterdir()) == []  # the day files' private copies are gone


def days_table(db: Path, first: dt.date, last: dt.date) -> list[dict[str, Any]]:
    """What --tables says of a lake read --from first --to last."""
    rows = sum(n for day, n in utc_days(db) if first <= day <= last)
    return [{"table": "events", "rows": rows, "first_day": first.isoformat(),
             "last_day": last.isoformat()}]


def test_from_and_to_choose_a_lakes_days(db: Path, lake: Path) -> None:
    first, last = START + dt.timedelta(days=2), START + dt.timedelta(days=4)
    result = sql(lake, "--tables", "--format", "json", "--from", first.isoformat(),
                 "--to", last.isoformat())
    assert result.code == 0, result.stderr
    assert json.loads(result.stdout) == days_table(db, first, last)
    # One end only: the lake's first or last day is the other.
    since = sql(lake, "--tables", "--format", "json", "--from", last.isoformat())
    assert json.loads(since.stdout) == days_table(db, last, END)
    until = sql(lake, "--tables", "--format", "json", "--to", first.isoformat())
    assert json.loads(until.stdout) == days_table(db, START, first)
    # Days without files: an empty events view.
    none = sql(lake, "SELECT count(*) AS n FROM events", "--format", "csv",
               "--from", "2023-01-01", "--to", "2023-01-31")
    assert none.code == 0, none.stderr
    assert none.stdout == b"n\n0\n"


def test_from_and_to_are_for_lakes(db: Path, ndjson_file: Path, lake: Path) -> None:
    for source in (db, ndjson_file):
        result = sql(source, "SELECT 1", "--from", START.isoformat())
        assert_one_error_line(result, 2, "--from and --to choose a lake's days")
    backwards = sql(lake, "SELECT 1", "--from", END.isoformat(), "--to", START.isoformat())
    assert_one_error_line(backwards, 2, f"--from {END} is after --to {START}")
    assert_one_error_line(sql(lake, "SELECT 1", "--to", "2024-02-30"), 2, "--to", "2024-02-30")


def upload(s3_server: S3Server, lake: Path, prefix: str = "events") -> None:
    client = s3_server.client()
    for path in sorted(lake.rglob("*")):
        if path.is_file():
            client.upload_file(str(path), s3_server.bucket,
                               f"{prefix}/{path.relative_to(lake).as_posix()}")


def test_s3_lake_is_the_events_view_like_the_folder(db: Path, lake: Path, s3_server: S3Server,
                                                    tmp_path: Path) -> None:
    upload(s3_server, lake)
    objects = s3_server.objects()
    temp, env = private_temp(tmp_path)
    env.update(s3_server.env())
    query = f"SELECT {COLUMNS}, date FROM events ORDER BY time, insert_id"
    from_s3 = sql(s3_server.url(), query, "--format", "ndjson", env=env)
    assert from_s3.code == 0, from_s3.stderr
    assert from_s3.stderr == ""
    assert same_rows(from_s3.stdout, sql(lake, query, "--format", "ndjson").stdout)
    tables = sql(s3_server.url(), "--tables", "--format", "json", env=env)
    assert tables.code == 0, tables.stderr
    assert json.loads(tables.stdout) == events_table(db)
    some = sql(s3_server.url(), "--tables", "--format", "json", "--from", END.isoformat(),
               env=env)
    assert json.loads(some.stdout) == days_table(db, END, END)
    assert s3_server.objects() == objects
    assert list(temp.iterdir()) == []  # the downloaded days are gone


def test_s3_prefix_without_a_lake_is_exit_2(s3_server: S3Server) -> None:
    url = s3_server.url("nothing-here")
    result = sql(url, "SELECT 1", env=s3_server.env())
    assert_one_error_line(result, 2, f"no lake at {url}")


def test_folder_that_is_no_lake_is_exit_2(tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "notes.txt").write_text("hello")
    result = sql(folder, "--tables")
    assert_one_error_line(result, 2, f"no lake at {folder}", "date=YYYY-MM-DD/data.parquet")
    assert tree(folder) == {"notes.txt": digest(folder / "notes.txt")}


def test_ndjson_file_is_the_events_view(db: Path, ndjson_file: Path, tmp_path: Path) -> None:
    before = digest(ndjson_file)
    temp, env = private_temp(tmp_path)
    from_file = sql(ndjson_file, ALL_ROWS, "--format", "ndjson", env=env)
    assert from_file.code == 0, from_file.stderr
    assert from_file.stderr == ""
    # Every line is a row, as in the file: Mixpanel sends some events twice,
    # and export --db keeps one of each.
    lines = output_lines(from_file.stdout.decode("utf-8"))
    assert len(lines) == len(ndjson_file.read_bytes().splitlines())
    assert len(lines) > len(set(lines))
    assert same_rows("".join(line + "\n" for line in sorted(set(lines))).encode(),
                     sql(db, ALL_ROWS, "--format", "ndjson").stdout)
    tables = sql(ndjson_file, "--tables", "--format", "json", env=env)
    assert tables.code == 0, tables.stderr
    assert json.loads(tables.stdout) == [{**events_table(db)[0], "rows": len(lines)}]
    assert digest(ndjson_file) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["events.duckdb", "nov.ndjson",
                                                          "system-temp"]
    assert list(temp.iterdir()) == []


def test_gzipped_and_empty_ndjson_files(ndjson_file: Path, tmp_path: Path) -> None:
    packed = tmp_path / "nov.ndjson.gz"
    packed.write_bytes(gzip.compress(ndjson_file.read_bytes()))
    result = sql(packed, "SELECT count(*) AS n FROM events", "--format", "csv")
    assert result.code == 0, result.stderr
    lines = len(ndjson_file.read_bytes().splitlines())
    assert result.stdout.decode() == f"n\n{lines}\n"
    empty = tmp_path / "quiet-day.ndjson"  # an export of a day without events
    empty.write_bytes(b"")
    tables = sql(empty, "--tables", "--format", "json")
    assert tables.code == 0, tables.stderr
    assert json.loads(tables.stdout) == [
        {"table": "events", "rows": 0, "first_day": None, "last_day": None}]


def test_bad_ndjson_line_is_one_line_exit_2(tmp_path: Path) -> None:
    broken = tmp_path / "broken.ndjson"
    broken.write_bytes(b'{"event": "a", "properties": {"time": 1714521600}}\n{"event": \n')
    result = sql(broken, "SELECT count(*) FROM events")
    assert_one_error_line(result, 2, "the query failed", "JSON")


# -- a sandbox: the input and nothing else ------------------------------------------------


@pytest.fixture(params=["db", "lake", "ndjson_file"])
def source(request: pytest.FixtureRequest) -> Path:
    """Each kind of input in turn: a DuckDB file, a lake folder, an NDJSON file."""
    path: Path = request.getfixturevalue(request.param)
    return path


REFUSED_HINT = ("(mpexport sql reads only its input: no other file, no extension, no "
                "setting; --output FILE writes the result)")


def assert_refused(result: CliResult, *words: str) -> None:
    assert_one_error_line(result, 2, "mpexport: error: the query was refused: ", *words)
    assert result.stderr.rstrip("\n").endswith(REFUSED_HINT)
    assert result.stdout == b""


def test_copy_to_a_file_is_refused(source: Path, tmp_path: Path) -> None:
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    target = folder / "copied.csv"
    assert_refused(sql(source, f"COPY (SELECT 42 AS n) TO '{target}'"), str(target))
    assert list(folder.iterdir()) == []


def test_reading_another_file_is_refused(source: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("do not read me")
    result = sql(source, f"SELECT content FROM read_text('{secret}')")
    assert_refused(result, str(secret))
    assert "do not read me" not in result.stderr


def test_attaching_another_file_is_refused(source: Path, tmp_path: Path) -> None:
    other = tmp_path / "other.duckdb"
    with duckdb.connect(str(other)) as con:
        con.execute("CREATE TABLE t AS SELECT 'do not read me' AS s")
    before = digest(other)
    assert_refused(sql(source, f"ATTACH '{other}' AS other (READ_ONLY); "
                               "SELECT * FROM other.t"), str(other))
    created = tmp_path / "created.duckdb"
    assert_refused(sql(source, f"ATTACH '{created}' AS created; "
                               "CREATE TABLE created.t AS SELECT 1"), str(created))
    assert digest(other) == before
    assert not created.exists()


def test_the_lakes_own_files_cannot_be_overwritten(lake: Path) -> None:
    before = tree(lake)
    day = lake / f"date={START.isoformat()}" / "data.parquet"
    result = sql(lake, f"COPY (SELECT 1 AS n) TO '{day}' (FORMAT csv, USE_TMP_FILE false)")
    assert_refused(result, str(day))
    assert tree(lake) == before


def test_ndjson_file_cannot_be_overwritten(ndjson_file: Path) -> None:
    before = digest(ndjson_file)
    result = sql(ndjson_file, f"COPY (SELECT 1 AS n) TO '{ndjson_file}' "
                              "(FORMAT csv, USE_TMP_FILE false)")
    assert_refused(result, str(ndjson_file))
    assert digest(ndjson_file) == before


def test_a_database_file_and_its_wal_cannot_be_overwritten(db: Path) -> None:
    # DuckDB allows the files of an attached database after external access
    # is switched off; it refuses a COPY onto them itself (a Binder Error).
    before = digest(db)
    wal = db.with_name(db.name + ".wal")
    for target in (db, wal):
        result = sql(db, f"COPY (SELECT 1 AS n) TO '{target}' (FORMAT csv, USE_TMP_FILE false)")
        assert_one_error_line(result, 2, "mpexport: error: the query failed: ", str(target.name))
        assert result.stdout == b""
    assert digest(db) == before and not wal.exists()


@pytest.mark.parametrize(("statement", "words"), [
    ("SET enable_external_access = true", ("enable_external_access", "locked")),
    ("RESET enable_external_access", ("enable_external_access", "locked")),
    ("SET allowed_directories = ['/']", ("allowed_directories", "locked")),
    ("SET autoinstall_known_extensions = true", ("autoinstall_known_extensions", "locked")),
    ("SET lock_configuration = false", ("lock_configuration", "locked")),
    ("INSTALL httpfs", ()),
    ("LOAD httpfs", ()),
])
def test_settings_and_extensions_are_locked(db: Path, statement: str,
                                            words: tuple[str, ...]) -> None:
    assert_refused(sql(db, statement), *words)


def test_a_view_in_a_file_someone_sent_reads_nothing_else(db: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("do not read me")
    with duckdb.connect(str(db)) as con:
        con.execute(f"CREATE VIEW innocent AS SELECT content FROM read_text('{secret}')")
    result = sql(db, "SELECT * FROM innocent")
    assert_refused(result, str(secret))
    assert "do not read me" not in result.stderr
    tables = sql(db, "--tables", "--format", "csv")  # views are not listed, nor read
    assert tables.code == 0, tables.stderr
    assert tables.stdout.decode().splitlines()[1:] == [
        f"events,{events_table(db)[0]['rows']},{START},{END}"]


# -- a database in use -------------------------------------------------------------------


def test_database_written_by_a_running_export_is_exit_4(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    dataset = HeldDataset(seed=32, events_per_day=200, hold_from=START + dt.timedelta(days=2))
    server = make_server(dataset, **HOLD_SERVER)
    path = tmp_path / "events.duckdb"
    args = ["export", "--api-url", server.url, "--from", START.isoformat(),
            "--to", END.isoformat(), "--db", str(path), "--chunk-days", "1", "--workers", "1"]
    proc = subprocess.Popen([*cli_command(), *args], env=clean_env(service_account_env()),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # The export is inside a chunk now: it has the file open and holds its lock.
        dataset.wait_held(1)
        result = sql(path, "SELECT count(*) FROM events")
        assert_one_error_line(result, 4, str(path), "in use by", "(mpexport export)")
        assert result.stdout == b""
    finally:
        dataset.release()
        code = proc.wait(timeout=PATIENCE)
    assert code == 0
    assert sql(path, "SELECT count(*) FROM events", "--format", "csv").code == 0


def test_lock_held_before_the_writer_opens_the_file_is_exit_4(db: Path) -> None:
    # A run that took the lock may not have opened the file yet: the lock decides.
    with database_lock(db):
        result = sql(db, "SELECT 1")
    assert_one_error_line(result, 4, "in use by", f"pid {os.getpid()}")
    assert sql(db, "SELECT 1").code == 0  # free again


def test_database_open_in_another_program_is_exit_4(db: Path) -> None:
    with duckdb.connect(str(db)):  # a read-write connection, as a DuckDB shell holds one
        result = sql(db, "SELECT 1")
    assert_one_error_line(result, 4, "open in another program")
    assert not lock_path(db).exists() or lock_path(db).read_bytes() == b""


def test_closed_reader_ends_quietly(db: Path) -> None:
    # Far more than a pipe holds: the writer meets the closed pipe.
    proc = subprocess.Popen(
        [*cli_command(), "sql", str(db), "SELECT * FROM range(3000000)", "--format", "ndjson"],
        env=clean_env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.readline() == b'{"range":0}\n'
    proc.stdout.close()
    stderr = proc.stderr.read()
    assert proc.wait(timeout=PATIENCE) == 0
    assert stderr == b""


# -- the connection and the demo ---------------------------------------------------------


def test_connection_reads_in_utc_without_a_progress_bar(db: Path) -> None:
    # DuckDB draws its progress bar on stdout, inside the result.
    with open_read_only(db) as con:
        settings = con.execute("SELECT current_setting('enable_progress_bar'), "
                               "current_setting('TimeZone')").fetchone()
    assert settings == (False, "UTC")


def test_connection_is_sandboxed_and_locked(db: Path) -> None:
    with open_read_only(db) as con:
        settings = con.execute(
            "SELECT current_setting('enable_external_access'), "
            "current_setting('autoload_known_extensions'), "
            "current_setting('autoinstall_known_extensions'), "
            "current_setting('lock_configuration')").fetchone()
        temp = Path(con.execute("SELECT current_setting('temp_directory')").fetchone()[0])
        # DuckDB's own spill folder would be beside the file (FILE.tmp), where
        # the sandbox would then let a query write: a private one instead.
        assert temp.parent.parent != db.parent
        assert temp.parent.is_dir()
    assert settings == (False, False, False, True)
    assert not temp.parent.exists()


@pytest.mark.skipif(os.name == "nt", reason="runs the line in a POSIX shell, as printed there")
def test_demo_suggests_a_query_that_works_as_typed(tmp_path: Path) -> None:
    demo = run_cli(["demo", "--days", "3", "--events-per-day", "50", "--no-progress"],
                   credentials=False, cwd=tmp_path)
    assert demo.code == 0, demo.stderr
    line = demo.stderr.splitlines()[-1]
    assert " sql demo.duckdb 'SELECT " in line, demo.stderr
    # Typed into a shell as shown, in the same folder: no `mpexport` on PATH is assumed.
    proc = subprocess.run(["bash", "-c", line], env=clean_env(), cwd=tmp_path,
                          capture_output=True, timeout=PATIENCE)
    assert proc.returncode == 0, proc.stderr
    events = duckdb_rows(tmp_path / "demo.duckdb",
                         "SELECT count(DISTINCT event) FROM events")[0][0]
    assert output_lines(proc.stdout.decode("utf-8"))[-1] == f"({events} rows)"
