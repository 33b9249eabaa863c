"""``mpexport sql``: query a DuckDB file, a lake or an NDJSON file without DuckDB or Python."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from mpexport.cli.options import CONTEXT, debug_option

# mpexport.sql.formats.FORMATS, spelled out: --help imports no formatting code.
FORMATS = ("table", "csv", "json", "ndjson")

EXIT_CODES = """\b
Exit codes:
  0    the whole result was written (or its reader closed stdout: | head)
  1    --output FILE could not be written, or a lake's object store could
       not be reached
  2    bad usage, nothing to read at SOURCE, or DuckDB refused the query
       (its message is printed, e.g. a statement that would change SOURCE
       or reach another file)
  3    a lake's object store refused the credentials
  4    a run is writing SOURCE (its lock names it), or another program has
       it open
  70   internal error (a bug: please report it, with --debug's traceback)
  130  interrupted (Ctrl-C)"""


@click.command("sql", context_settings=CONTEXT, epilog=EXIT_CODES)
@click.argument("source", metavar="SOURCE")
@click.argument("query", metavar="[QUERY]", required=False)
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table",
              show_default=True,
              help="table: aligned columns (long values cut with …) and a row count; csv: "
                   "a header line; json: one array; ndjson: one object per line.")
@click.option("-o", "--output", metavar="FILE", type=click.Path(dir_okay=False),
              help="Write the result to FILE instead of stdout, byte for byte (put in "
                   "place when the query ends; a failed query leaves FILE as it was).")
@click.option("--from", "from_", metavar="DATE",
              help="A lake's first UTC day to read (YYYY-MM-DD, today, yesterday, -N); "
                   "only the days chosen are copied.")
@click.option("--to", "to", metavar="DATE", help="A lake's last UTC day to read.")
@click.option("--tables", is_flag=True,
              help="List the tables instead: rows, and the first and last UTC day of "
                   "their time column.")
@debug_option
def sql_command(source: str, query: str | None, fmt: str, output: str | None,
                from_: str | None, to: str | None, tables: bool) -> None:
    """Run a SQL query on exported data and print the result.

    SOURCE is a DuckDB file, a lake (a folder or s3://, gs://, az:// URL that
    export --parquet wrote) or an NDJSON export file (also gzipped). A lake's
    days, or the NDJSON file's events, are the view events (a lake's also
    has the date column of its day folders); they are copied to a private
    temp folder first, removed at the end (--from/--to: only those days).

    SOURCE is read-only: it is never created or changed, and a statement
    that would change it fails. The query reads SOURCE and nothing else: no
    other file (COPY ... TO, read_text, ATTACH), no extension, no setting.
    Rows are streamed, so a large result needs no more memory than a small
    one. In JSON, times are ISO 8601 (UTC), decimals are numbers, JSON
    columns are embedded as JSON and BLOBs are base64. The query is DuckDB's
    SQL; with several statements, the last one's rows are printed.

    \b
    Examples:
      mpexport sql events.duckdb --tables
      mpexport sql events.duckdb \\
        "SELECT event, count(*) FROM events GROUP BY 1 ORDER BY 2 DESC"
      mpexport sql events.duckdb \\
        "SELECT * FROM events WHERE time >= '2024-05-01'" --format csv -o may.csv
      mpexport sql events.duckdb "SELECT properties FROM events" \\
        --format ndjson | jq .
      mpexport sql lake/ "SELECT date, count(*) FROM events GROUP BY 1 ORDER BY 1"
      mpexport sql s3://bucket/events --tables
      mpexport sql s3://bucket/events "SELECT count(*) FROM events" \\
        --from -7 --to yesterday
      mpexport sql week.ndjson "SELECT count(DISTINCT distinct_id) FROM events"
    """
    from mpexport.dates import parse_date, utc_today
    from mpexport.environment import Environment
    from mpexport.sql.run import run_sql

    # A lake's days are UTC days, so relative words count from UTC's today.
    today = utc_today()
    first = parse_date(from_, today=today, option="--from") if from_ else None
    last = parse_date(to, today=today, option="--to") if to else None
    run_sql(source, query, tables=tables, fmt=fmt, output=Path(output) if output else None,
            stdout=sys.stdout.buffer, environ=Environment.from_process().environ,
            first_day=first, last_day=last)
