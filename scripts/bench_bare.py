"""The bare pipelines scripts/bench.py compares mpexport against (run as a subprocess).

``download``: one streamed ``requests`` GET of the whole range, gzip on the
wire, decoded from ``resp.raw`` into a file. No verification, no retries, no
chunking: the floor of "curl the export endpoint to a file" in Python.

``duckdb``: the same download to a spool file, then one DuckDB ``read_json``
(explicit columns) into a table with mpexport's events schema, the typed
columns derived in SQL. No dedupe, no manifest, one transaction.

Credentials come from MP_USERNAME / MP_SECRET / MP_PROJECT_ID. Prints the
number of lines (download) or rows (duckdb) to stderr as ``bare: N``, which
scripts/bench.py checks against the events the server holds.

    python scripts/bench_bare.py download URL FROM TO OUT_FILE
    python scripts/bench_bare.py duckdb URL FROM TO DB_FILE SPOOL_FILE
    python scripts/bench_bare.py duckdb-lenient URL FROM TO DB_FILE SPOOL_FILE
"""

from __future__ import annotations

import os
import sys

READ_BLOCK = 256 * 1024

SCHEMA = (
    "event VARCHAR, time TIMESTAMPTZ, distinct_id VARCHAR, insert_id VARCHAR, "
    "mp_processing_time_ms BIGINT, properties JSON"
)


def download(url: str, from_date: str, to_date: str, out_path: str) -> int:
    """Stream the export of ``from_date..to_date`` into ``out_path``; return its line count."""
    import requests

    params = {"from_date": from_date, "to_date": to_date,
              "project_id": os.environ["MP_PROJECT_ID"]}
    auth = (os.environ["MP_USERNAME"], os.environ["MP_SECRET"])
    lines = 0
    with requests.Session() as session:
        session.headers["Accept-Encoding"] = "gzip"
        with session.get(f"{url.rstrip('/')}/api/2.0/export", params=params, auth=auth,
                         stream=True, timeout=(10, 600)) as resp:
            resp.raise_for_status()
            with open(out_path, "wb") as out:
                while block := resp.raw.read(READ_BLOCK, decode_content=True):
                    lines += block.count(b"\n")
                    out.write(block)
    return lines


def load(db_path: str, spool: str, lenient: bool = False) -> int:
    """read_json the spool file into a fresh ``events`` table; return its row count.

    ``lenient`` reads lines DuckDB refuses (realistic data has some) as rows
    without properties instead of failing: the cheapest way through them.
    """
    import duckdb

    path = spool.replace("'", "''")
    with duckdb.connect(db_path, config={"preserve_insertion_order": False}) as con:
        con.execute("SET TimeZone = 'UTC'")
        con.execute(f"CREATE TABLE events ({SCHEMA})")
        con.execute(
            f"""INSERT INTO events
            SELECT event,
                   to_timestamp(CAST(properties->>'$.time' AS DOUBLE)),
                   properties->>'$.distinct_id',
                   properties->>'$."$insert_id"',
                   TRY_CAST(properties->>'$.mp_processing_time_ms' AS BIGINT),
                   properties
            FROM read_json('{path}', format = 'newline_delimited',
                           columns = {{'event': 'VARCHAR', 'properties': 'JSON'}},
                           ignore_errors = {str(lenient).lower()})"""
        )
        (rows,) = con.execute("SELECT count(*) FROM events").fetchone()  # type: ignore[misc]
    return int(rows)


def main(argv: list[str]) -> int:
    """Dispatch ``download`` or ``duckdb``."""
    if len(argv) >= 5 and argv[0] == "download":
        count = download(argv[1], argv[2], argv[3], argv[4])
    elif len(argv) >= 6 and argv[0] in ("duckdb", "duckdb-lenient"):
        download(argv[1], argv[2], argv[3], argv[5])
        count = load(argv[4], argv[5], lenient=argv[0] == "duckdb-lenient")
        os.unlink(argv[5])
    else:
        print(__doc__, file=sys.stderr)
        return 2
    print(f"bare: {count}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
