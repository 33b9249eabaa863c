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

Without ``--memory-limit`` or ``$MPEXPORT_MEMORY_LIMIT`` the budget follows
the machine (:func:`default_budget`): 256MB on two cores, a thread's worth
more for each further core, within a quarter of the memory.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mpexport.errors import UsageError

if TYPE_CHECKING:
    from mpexport.environment import Environment

log = logging.getLogger(__name__)

MEMORY_LIMIT_ENV = "MPEXPORT_MEMORY_LIMIT"
DEFAULT_MEMORY_LIMIT = "256MB"
MIB = 1024 * 1024
# Below this the reader's own vectors (2048 rows of 1-2 KB events, parsed)
# do not fit: measured failing at 64 MB, loading at 96 MB, on realistic rows.
MIN_BUDGET = 96 * 1000 * 1000  # "96MB", as DuckDB reads it
_PER_THREAD = 128 * MIB
# When the cores are unknown the thread count is capped as on the two-core
# machine the default budget was sized for.
_UNKNOWN_CORES = 2
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


def default_budget(cores: int | None, memory_bytes: int | None) -> str:
    """The loader's budget when none is given, as text (``256MB``, ``2135MB``) for ``cores``.

    The rule: **256MB, plus 128 MiB for each core beyond the second, at most
    a quarter of ``memory_bytes``, never under 256MB.** Either value unknown
    (None) gives 256MB. Decimal megabytes, rounded down, as the 256MB
    default has always been written.

    256MB, the default before the machine counted, stays exactly that on one
    or two cores: a 2-core cron VM loads as it always did, with one thread
    (256MB is 244 MiB: one 128 MiB thread with room for DuckDB's own caches). Each further core
    adds the ~128 MiB one more loader thread needs (the per-thread figure
    measured above), so the loader gets one thread per core but one, leaving
    a core to the fetch workers' decompression and verification. A quarter
    of the memory bounds it on a machine with many cores and little memory
    (the rest is the system's, the spool's page cache and other programs'),
    and the thread count never exceeds the cores (:meth:`LoaderBudget.from_text`).
    """
    if not cores or not memory_bytes:
        return DEFAULT_MEMORY_LIMIT
    base = parse_size(DEFAULT_MEMORY_LIMIT)
    wanted = base + max(0, cores - 2) * _PER_THREAD
    budget = max(base, min(wanted, memory_bytes // 4))
    return f"{budget // 1000**2}MB"


@dataclass(frozen=True)
class BudgetChoice:
    """The loader's budget for a run, and why it is that one (for ``--version`` and ``-v``)."""

    text: str
    # "--memory-limit", "MPEXPORT_MEMORY_LIMIT" or "default".
    source: str
    cpus: int | None = None
    memory_bytes: int | None = None

    def describe(self) -> str:
        """``256MB, 1 thread: the default for 2 cores and 23.5 GiB``, or why the text is invalid."""
        try:
            threads = LoaderBudget.from_text(self.text, self.cpus).threads
        except UsageError as exc:
            return f"{self.text} from {self.source} is invalid: {exc}"
        budget = f"{self.text}, {threads} thread{'s' if threads != 1 else ''}"
        if self.source != "default":
            return f"{budget}: set by {self.source}"
        cores = f"{self.cpus} core{'s' if self.cpus != 1 else ''}" if self.cpus else "unknown cores"
        memory = (f"{self.memory_bytes / 1024**3:.1f} GiB" if self.memory_bytes
                  else "unknown memory")
        return f"{budget}: the default for {cores} and {memory}"


def choose_budget(given: str | None, environment: Environment) -> BudgetChoice:
    """The loader's budget: ``given``, else ``$MPEXPORT_MEMORY_LIMIT``, else the machine's default.

    The default follows ``environment``'s cores and memory (:func:`default_budget`).
    """
    variable = environment.environ.get(MEMORY_LIMIT_ENV) or None
    machine = {"cpus": environment.cpus, "memory_bytes": environment.memory_bytes}
    if given:
        # The CLI's option reads the variable itself: the same text is the variable's.
        source = MEMORY_LIMIT_ENV if given == variable else "--memory-limit"
        return BudgetChoice(given, source, **machine)
    if variable:
        return BudgetChoice(variable, MEMORY_LIMIT_ENV, **machine)
    return BudgetChoice(default_budget(environment.cpus, environment.memory_bytes), "default",
                        **machine)


def chosen_memory_limit(given: str | None, environment: Environment) -> str:
    """The loader's budget as text (see :func:`choose_budget`); logged (``-v``) with its threads.

    The run calls it when it opens a database, once, so that the variable
    never counts against NDJSON and the log says the budget once per run.
    """
    choice = choose_budget(given, environment)
    log.info("loader budget %s", choice.describe())
    return choice.text


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
        """The budget for ``text`` (else 256MB) on ``cpus`` cores (the run's, from its environment).

        A thread per 128 MiB, at most one per core: a run chooses its text
        with :func:`chosen_memory_limit`. Unknown cores count as two.
        """
        text = text or DEFAULT_MEMORY_LIMIT
        memory = parse_size(text)
        if memory < MIN_BUDGET:
            raise UsageError(
                f"memory limit {text} is below the smallest that loads: 96MB",
                "give --memory-limit 96MB or more",
            )
        cores = cpus or _UNKNOWN_CORES
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
