"""Lines DuckDB's JSON reader refuses, repaired for the stored copy only.

Mixpanel's export can hold legal-looking events that DuckDB will not parse:
a string cut at 255 bytes inside a UTF-8 character (invalid UTF-8), a JS
string cut inside an emoji's surrogate pair (a lone ``\\ud83d`` escape), a
raw control character inside a string. The loader reads spool files with
``ignore_errors``, which turns such a line into a row without properties;
DuckDB itself then names the refused lines (:func:`count_refused`),
and this module writes repaired copies of exactly those lines (U+FFFD in
place of what cannot be decoded) to a side file that the loader reads in
the same transaction. The spool file, and so stdout, is never changed.

Asking DuckDB which lines it refused, rather than guessing with checks of
our own, costs one parallel C++ pass over the file instead of a Python scan
(14 s for a 1.5 GB day of realistic events, measured), and repairs whatever
the reader refuses, not only the kinds we know of.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The repair runs while DuckDB holds the loader's budget: a block, its
# copies and its split lines cost several times its size (16 MiB blocks
# added 125 MB to the peak RSS of a 1M-event day, 1 MiB adds 10 MB).
BLOCK_BYTES = 1024 * 1024
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
_REPLACEMENT = "\ufffd"


@dataclass
class RepairResult:
    """What a repair pass wrote: lines repaired, lines not even lenient JSON could read."""

    repaired: int = 0
    unrepairable: int = 0


@dataclass(frozen=True)
class ReaderCount:
    """What one pass of the reader over a spool file gave.

    ``rows``: rows with properties (events read); ``refused``: 0-based
    numbers of the lines it refused, sorted. For a file of N lines the two
    add up to N, if the reader behaves as the loader relies on.
    """

    rows: int
    refused: list[int]


def count_refused(con: Any, reader: str) -> ReaderCount:
    """The rows ``reader`` (a ``read_json`` with ``ignore_errors``) gives, and its refused lines.

    Row numbers follow the file only while insertion order is preserved, so
    the setting is switched on for this one statement; the loader keeps it
    off otherwise (it costs memory on inserts). Counting the readable rows
    in the same statement is one more aggregate over a column already read,
    so the count check costs no second pass over the file.
    """
    with in_file_order(con):
        rows, refused = con.execute(
            "SELECT count(properties), list(n) FILTER (WHERE properties IS NULL) "
            f"FROM (SELECT row_number() OVER () - 1 AS n, properties FROM {reader})"
        ).fetchone()
    # list() over no rows is NULL.
    return ReaderCount(int(rows), sorted(int(n) for n in refused or ()))


@contextlib.contextmanager
def in_file_order(con: Any) -> Iterator[None]:
    """Preserve insertion order on ``con`` for the statements inside, so row numbers follow files.

    The loader keeps the setting off otherwise: it costs memory on inserts.
    """
    con.execute("SET preserve_insertion_order = true")
    try:
        yield
    finally:
        with contextlib.suppress(Exception):
            con.execute("SET preserve_insertion_order = false")


def refused_line_numbers(con: Any, reader: str) -> list[int]:
    """0-based numbers of the lines ``reader`` refused (see :func:`count_refused`)."""
    return count_refused(con, reader).refused


def _clean(value: Any) -> Any:
    if isinstance(value, str):
        return _LONE_SURROGATE.sub(_REPLACEMENT, value)
    if isinstance(value, dict):
        return {_clean(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def repair_line(line: bytes) -> bytes | None:
    """A copy of ``line`` (no newline) that DuckDB accepts, with a newline; None if not JSON.

    Undecodable bytes and lone surrogates become U+FFFD; control characters
    are escaped; everything else keeps its value (integers of any size,
    ``\\u0000``, empty and dotted keys).
    """
    text = line.decode("utf-8", errors="replace")
    try:
        value = json.loads(text, strict=False)
    except ValueError:
        return None
    fixed = json.dumps(_clean(value), ensure_ascii=False, separators=(",", ":"))
    return fixed.encode("utf-8") + b"\n"


def _blocks(path: Path) -> Iterator[bytes]:
    """The file in blocks that end on a line boundary (the last may not)."""
    with path.open("rb") as handle:
        rest = b""
        while data := handle.read(BLOCK_BYTES):
            data = rest + data
            cut = data.rfind(b"\n") + 1
            rest = data[cut:]  # all of it when one line is longer than a block
            if cut:
                yield data[:cut]
        if rest:
            yield rest


def write_repairs(spool: Path, side_file: Path, line_numbers: Sequence[int],
                  originals: Path | None = None) -> RepairResult:
    """Write repaired copies of the lines ``line_numbers`` (0-based, sorted) of ``spool``.

    With ``originals``, the lines as they are in ``spool`` go there too, so
    the loader can check that DuckDB refuses them when read again (that the
    numbers named the refused lines, see :mod:`mpexport.sinks.duckdb.rows`).
    """
    result = RepairResult()
    wanted = iter(line_numbers)
    target = next(wanted, None)
    first = 0  # number of the block's first line
    with side_file.open("wb") as out, contextlib.ExitStack() as stack:
        raw = stack.enter_context(originals.open("wb")) if originals is not None else None
        for block in _blocks(spool):
            if target is None:
                break  # the rest of the file holds no refused line
            count = block.count(b"\n") + (not block.endswith(b"\n"))
            if target is not None and target < first + count:
                lines = block.split(b"\n")
                while target is not None and target < first + count:
                    line = lines[target - first]
                    if raw is not None:
                        raw.write(line + b"\n")
                    fixed = repair_line(line)
                    if fixed is None:
                        result.unrepairable += 1
                    else:
                        result.repaired += 1
                        out.write(fixed)
                    target = next(wanted, None)
            first += count
    return result
