"""How query results are written: a table for people; CSV, JSON and NDJSON for scripts.

Each format turns a column list and batches of rows into UTF-8 bytes, batch
by batch, so no format holds more than one batch. Lines end in ``\\n`` on
every platform.

Values in JSON (and in CSV and table cells, as text):

- numbers are numbers; a ``DECIMAL`` keeps its digits (``1.50``); a float
  that JSON cannot hold (NaN, infinities) is ``null`` (text: ``NaN``,
  ``Infinity``)
- dates and times are ISO 8601 (``2024-05-01T10:30:00+00:00``, in UTC for
  ``TIMESTAMP WITH TIME ZONE``); an ``INTERVAL`` is an ISO 8601 duration
  (``P1DT2H3.5S``)
- a ``JSON`` column's value is embedded as JSON, not as a string
- ``BLOB`` bytes are base64 (standard alphabet, padded)
- lists and structs are arrays and objects; a ``MAP`` is an object, its
  keys as text; in CSV and table cells they are JSON text
- ``NULL`` is ``null``, an empty CSV field, ``NULL`` in a table
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import math
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, TypeAlias

FORMATS = ("table", "csv", "json", "ndjson")
# Widest table column, in terminal cells; longer values end in "…".
MAX_WIDTH = 40
ELLIPSIS = "…"

Rows = list[tuple[Any, ...]]


@dataclass(frozen=True)
class Nested:
    """Where JSON text sits inside a nested value: in its items (LIST, ARRAY, MAP) or fields."""

    items: Shape = False
    fields: tuple[tuple[str, Shape], ...] = ()


# True: the value is JSON text; False: nothing inside is; Nested: some parts are.
Shape: TypeAlias = bool | Nested


@dataclass(frozen=True)
class Column:
    """A result column: its name, DuckDB's type, how it is shown and where JSON text is."""

    name: str
    type: str
    numeric: bool = False  # right-aligned in a table
    json: Shape = False


# -- values ------------------------------------------------------------------------------


def _duration(delta: dt.timedelta) -> str:
    """An ISO 8601 duration: ``P1DT2H3.5S``; ``PT0S`` for zero."""
    sign = "-" if delta < dt.timedelta(0) else ""
    delta = abs(delta)
    hours, rest = divmod(delta.seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    clock = "".join(f"{n}{unit}" for n, unit in ((hours, "H"), (minutes, "M")) if n)
    if delta.microseconds:
        clock += f"{seconds}.{delta.microseconds:06d}".rstrip("0") + "S"
    elif seconds or not (delta.days or clock):
        clock += f"{seconds}S"
    days = f"{delta.days}D" if delta.days else ""
    return f"{sign}P{days}{'T' + clock if clock else ''}"


def _scalar_text(value: Any) -> str:
    """Text of a value JSON has no type for (times, bytes, UUIDs, ...)."""
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return _duration(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    return str(value)


def _string(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def _embedded(text: str) -> str:
    # DuckDB checks JSON values on the way in, so the text is JSON already;
    # it is re-encoded only when a line break in it would split an NDJSON line.
    if "\n" in text or "\r" in text:
        return json.dumps(json.loads(text), ensure_ascii=False, separators=(",", ":"))
    return text


def json_text(value: Any, shape: Shape = False) -> str:
    """``value`` (as DuckDB's Python client gives it) as JSON text."""
    if value is None:
        return "null"
    if isinstance(value, str):
        return _embedded(value) if shape is True else _string(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else "null"
    if isinstance(value, Decimal):
        return format(value, "f")  # never an exponent: 0E-7 is 0.0000000
    nested = shape if isinstance(shape, Nested) else Nested()
    if isinstance(value, dict):
        fields = dict(nested.fields)
        return "{" + ",".join(
            f"{_string(str(key))}:{json_text(item, fields.get(str(key), nested.items))}"
            for key, item in value.items()
        ) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(json_text(item, nested.items) for item in value) + "]"
    return _string(_scalar_text(value))


def text(value: Any, shape: Shape = False) -> str:
    """``value`` as the text of a CSV field or a table cell (``NULL`` is empty)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, (int, float, Decimal, dict, list, tuple)):
        return json_text(value, shape)
    return _scalar_text(value)


# -- formats -----------------------------------------------------------------------------


def _objects(columns: list[Column], rows: Rows) -> list[str]:
    """Each row as a JSON object on one line."""
    keys = [_string(column.name) + ":" for column in columns]
    shapes = [column.json for column in columns]
    return [
        "{" + ",".join(key + json_text(value, shape)
                       for key, value, shape in zip(keys, row, shapes, strict=True)) + "}"
        for row in rows
    ]


def ndjson(columns: list[Column], batches: Iterable[Rows]) -> Iterator[bytes]:
    """One JSON object per row and line."""
    for rows in batches:
        yield "".join(line + "\n" for line in _objects(columns, rows)).encode("utf-8")


def json_array(columns: list[Column], batches: Iterable[Rows]) -> Iterator[bytes]:
    """One JSON array of row objects, a row per line."""
    separator = "[\n"
    for rows in batches:
        if rows:
            yield (separator + ",\n".join(_objects(columns, rows))).encode("utf-8")
            separator = ",\n"
    yield b"[]\n" if separator == "[\n" else b"\n]\n"


def csv_rows(columns: list[Column], batches: Iterable[Rows]) -> Iterator[bytes]:
    """CSV with a header line (RFC 4180 quoting, ``\\n`` line ends)."""
    import csv
    import io

    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator="\n")
    shapes = [column.json for column in columns]

    def flush() -> bytes:
        data = buffer.getvalue().encode("utf-8")
        buffer.seek(0)
        buffer.truncate()
        return data

    if columns:
        writer.writerow([column.name for column in columns])
        yield flush()
    for rows in batches:
        writer.writerows([text(value, shape) for value, shape in zip(row, shapes, strict=True)]
                         for row in rows)
        yield flush()


# Control characters would move a terminal's cursor (or worse), and line
# separators would split a row: shown escaped.
_VISIBLE = {code: f"\\x{code:02x}" for code in (*range(0x20), *range(0x7F, 0xA0))}
_VISIBLE.update({0x2028: "\\u2028", 0x2029: "\\u2029"})
_VISIBLE.update({ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t"})


def _char_width(char: str) -> int:
    if unicodedata.combining(char):
        return 0
    return 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1


def _width(cell: str) -> int:
    return len(cell) if cell.isascii() else sum(_char_width(char) for char in cell)


def _fit(cell: str, width: int) -> str:
    """``cell`` cut to ``width`` terminal cells, ending in "…" when cut."""
    if _width(cell) <= width:
        return cell
    kept, used = [], 0
    for char in cell:
        used += _char_width(char)
        if used > width - 1:
            break
        kept.append(char)
    return "".join(kept) + ELLIPSIS


def _cell(value: Any, shape: Shape) -> str:
    if value is None:
        return "NULL"
    # Only the start can be shown: escaping a 100 kB value whole is wasted work.
    return text(value, shape)[: 4 * MAX_WIDTH].translate(_VISIBLE)


def table(columns: list[Column], batches: Iterable[Rows]) -> Iterator[bytes]:
    """Aligned columns sized by the first batch, then ``(N rows)``."""
    shapes = [column.json for column in columns]
    batch_iter = iter(batches)
    first = [[_cell(v, s) for v, s in zip(row, shapes, strict=True)]
             for row in next(batch_iter, [])]
    heads = [_fit(column.name.translate(_VISIBLE), MAX_WIDTH) for column in columns]
    widths = [max([1, _width(head), *(min(_width(row[i]), MAX_WIDTH) for row in first)])
              for i, head in enumerate(heads)]

    right = [column.numeric for column in columns]

    def line(cells: list[str]) -> str:
        out = []
        for cell, width, numeric in zip(cells, widths, right, strict=True):
            used = _width(cell)
            if used > width:
                cell = _fit(cell, width)
                used = _width(cell)
            pad = " " * (width - used)
            out.append(pad + cell if numeric else cell + pad)
        return "  ".join(out).rstrip() + "\n"

    count = len(first)
    head = ""
    if columns:
        head = line(heads) + "  ".join("-" * width for width in widths) + "\n"
    yield (head + "".join(line(cells) for cells in first)).encode("utf-8")
    for rows in batch_iter:
        count += len(rows)
        yield "".join(line([_cell(v, s) for v, s in zip(row, shapes, strict=True)])
                      for row in rows).encode("utf-8")
    yield f"({count} {'row' if count == 1 else 'rows'})\n".encode()


WRITERS = {"table": table, "csv": csv_rows, "json": json_array, "ndjson": ndjson}


def render(fmt: str, columns: list[Column], batches: Iterable[Rows]) -> Iterator[bytes]:
    """The bytes of a result in format ``fmt`` (one of :data:`FORMATS`), batch by batch."""
    return WRITERS[fmt](columns, batches)
