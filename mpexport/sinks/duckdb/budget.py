"""The loader's memory budget: parsing ``--memory-limit`` and turning it into DuckDB settings.

A budget must make a load slower, never make it fail. Two facts measured on
DuckDB 2.0 decide how a budget is spent:

- each reader thread of ``read_json`` allocates 32 MiB buffers, and the JSON
  functions that extract the key fields keep a per-thread arena that grows in
  8-16 MiB steps; a statement doing both needs about 128 MiB per thread, so
  the thread count follows the budget;
- below about 192 MiB even one thread cannot read and extract in one
  statement, so small budgets stage the raw lines first (a temp table that
  spills to disk) and extract from that in a second statement.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mpexport.errors import UsageError

MEMORY_LIMIT_ENV = "MPEXPORT_MEMORY_LIMIT"
DEFAULT_MEMORY_LIMIT = "256MB"
MIB = 1024 * 1024
# Below this the reader's own vectors (2048 rows of 1-2 KB events, parsed)
# do not fit: measured failing at 64 MB, loading at 96 MB, on realistic rows.
MIN_BUDGET = 96 * 1000 * 1000  # "96MB", as DuckDB reads it
_PER_THREAD = 128 * MIB
_ONE_STATEMENT_FLOOR = 192 * MIB
# Rows per row group written by the loader (DuckDB's default is 122,880).
# An insert buffers a whole row group before compressing it to disk: at 1-2
# KB a realistic event that is 150-250 MB, most of a 256MB budget, so the
# rest of the statement spilled. 16,384 rows (~25 MB): the insert of a
# realistic 516 MB day took 9.2 s instead of 11.6 s (EXPLAIN ANALYZE), a
# 4-day export ~11% less wall time; files grow ~5%, peak RSS ~+30 MB.
ROW_GROUP_ROWS = 16_384
DATABASE_ALIAS = "mpexport_db"

_UNITS = {
    "": 1, "b": 1,
    "kb": 1000, "mb": 1000**2, "gb": 1000**3, "tb": 1000**4,
    "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4,
    "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4,
}
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*")


def parse_size(text: str) -> int:
    """Bytes from a size such as ``256MB``, ``1.5GB``, ``512MiB`` or ``300m``.

    ``KB/MB/GB`` are decimal, ``KiB/MiB/GiB`` and the bare letters binary,
    as DuckDB and most tools read them.
    """
    match = _SIZE.fullmatch(text)
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in _UNITS:
        raise UsageError(
            f"invalid memory size {text!r}",
            "give a number with a unit, e.g. 256MB, 1GB or 512MiB",
        )
    return int(float(match.group(1)) * _UNITS[unit])


def chosen_memory_limit(given: str | None, environ: Mapping[str, str]) -> str | None:
    """The loader's budget as text: ``given``, else ``$MPEXPORT_MEMORY_LIMIT`` of ``environ``.

    None leaves the default. The run applies it (with its environment) when
    it opens a database, so that the variable never counts against NDJSON.
    """
    return given or environ.get(MEMORY_LIMIT_ENV) or None


@dataclass(frozen=True)
class LoaderBudget:
    """How the DuckDB loader spends its memory."""

    memory_bytes: int
    threads: int
    # Stage the raw lines before extracting keys (small budgets, see above).
    two_step: bool
    # As the user wrote it (``512MiB``), for messages.
    text: str = field(default=DEFAULT_MEMORY_LIMIT, compare=False)

    @classmethod
    def from_text(cls, text: str | None = None, cpus: int | None = None) -> LoaderBudget:
        """The budget for ``text``, else the default (see :func:`chosen_memory_limit`)."""
        text = text or DEFAULT_MEMORY_LIMIT
        memory = parse_size(text)
        if memory < MIN_BUDGET:
            raise UsageError(
                f"memory limit {text} is below the smallest that loads: 96MB",
                "give --memory-limit 96MB or more",
            )
        cores = cpus or os.cpu_count() or 1
        threads = max(1, min(cores, memory // _PER_THREAD))
        two_step = memory < _ONE_STATEMENT_FLOOR
        return cls(memory, 1 if two_step else threads, two_step, text.strip())

    def duckdb_config(self, db_path: Path) -> dict[str, Any]:
        """Settings for ``duckdb.connect`` on ``db_path``."""
        return {
            "memory_limit": f"{self.memory_bytes // 1024}KiB",
            "threads": self.threads,
            # Spilled data goes beside the database (same disk, same
            # permissions) rather than to a small /tmp.
            "temp_directory": str(spill_directory(db_path)),
            # The loader never relies on implicit order; dropping the
            # guarantee lets readers and inserts stream with less memory.
            "preserve_insertion_order": False,
            # By default every commit past 16 MB of WAL checkpoints, rewriting
            # each chunk's rows once more: a fifth of the load time. Committed
            # chunks stay durable in the WAL (replayed on the next open).
            "checkpoint_threshold": "256MB",
            # Mixpanel's properties are JSON text: zstd stores a realistic
            # day in an eighth of the space FSST/dictionary did (59 MB against
            # 439 MB for 400 MB of NDJSON) and writes it faster (7.0 s against
            # 9.4 s), measured on DuckDB 2.0.1. Files stay readable by any
            # DuckDB that knows zstd segments (1.2 and later).
            "force_compression": "zstd",
        }


def attach_database(db_path: Path, config: dict[str, Any]) -> Any:
    """A connection to ``db_path`` whose new row groups hold :data:`ROW_GROUP_ROWS` rows.

    The row group size is an option of ``ATTACH`` only, so the connection's
    own database is an empty in-memory one and the file is attached and made
    the default: every unqualified name means the file's.
    """
    import duckdb

    con = duckdb.connect(config=config)
    try:
        con.execute(f"ATTACH '{_quoted(str(db_path))}' AS {DATABASE_ALIAS} "
                    f"(ROW_GROUP_SIZE {ROW_GROUP_ROWS})")
        con.execute(f"USE {DATABASE_ALIAS}")
    except BaseException:
        con.close()
        raise
    return con


def _quoted(text: str) -> str:
    return text.replace("'", "''")


def spill_directory(db_path: Path) -> Path:
    """Where DuckDB spills beyond the budget: ``FILE.tmp`` beside the database."""
    return db_path.with_name(db_path.name + ".tmp")
