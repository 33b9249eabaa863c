"""Lines DuckDB's JSON reader refuses, found and repaired for the stored copy only.

Mixpanel's export can hold legal-looking events that DuckDB will not parse:
a string cut at 255 bytes inside a UTF-8 character (invalid UTF-8), a JS
string cut inside an emoji's surrogate pair (a lone ``\\ud83d`` escape), a
raw control character inside a string. The loader reads spool files with
``ignore_errors``; when fewer rows arrive than the file has lines, this
module finds the refused lines and writes repaired copies of them (U+FFFD in
place of what cannot be decoded) to a side file that the loader reads in the
same transaction. The spool file, and so stdout, is never changed.

Finding them must not cost a Python loop over every line of a multi-GB
chunk: blocks are checked with C-speed bytes operations first, and only a
block that shows a suspect is split into lines.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BLOCK_BYTES = 16 * 1024 * 1024
# A \u escape of a surrogate, or an escaped backslash (which must be skipped
# so that "\\ud83d" -- a backslash, then text -- is not read as an escape).
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_PAIRED_OR_LONE = re.compile(
    r"\\(?:u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2}"
    r"|(u[dD][89a-fA-F][0-9a-fA-F]{2})|.)"
)
# Control characters are never legal inside a JSON string, and Mixpanel's
# lines have no whitespace outside strings; "\n" only ends a line.
_CONTROL = re.compile(rb"[\x00-\x09\x0b-\x1f]")
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
_REPLACEMENT = "\ufffd"


@dataclass
class RepairResult:
    """What a scan found: repaired lines written, lines too long for the reader."""

    repaired: int = 0
    oversized: int = 0
    unrepairable: int = 0
    longest: int = 0  # bytes of the longest line written to the side file


def _blocks(path: Path) -> Iterator[bytes]:
    """The file in blocks that end on a line boundary (the last may not)."""
    with path.open("rb") as handle:
        rest = b""
        while True:
            data = handle.read(BLOCK_BYTES)
            if not data:
                if rest:
                    yield rest
                return
            data = rest + data
            cut = data.rfind(b"\n") + 1
            if cut == 0:
                rest = data  # one line longer than a block: keep reading
                continue
            rest = data[cut:]
            yield data[:cut]


def _suspect(block: bytes) -> bool:
    if not block.isascii():
        try:
            block.decode("utf-8")
        except UnicodeDecodeError:
            return True
    return _SURROGATE_ESCAPE.search(block) is not None or _CONTROL.search(block) is not None


def needs_repair(line: bytes) -> bool:
    """True when DuckDB's reader refuses ``line`` (no newline) for its content."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        return True
    if _CONTROL.search(line):
        return True
    if _SURROGATE_ESCAPE.search(line) is None:
        return False
    return any(m.group(1) for m in _PAIRED_OR_LONE.finditer(text))


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


def write_repairs(spool: Path, side_file: Path, max_line: int) -> RepairResult:
    """Write repaired copies of the refused lines of ``spool`` to ``side_file``.

    Lines longer than ``max_line`` (the reader's object limit) are copied
    as they are (repaired if need be): the loader reads the side file with
    a limit that fits them.
    """
    result = RepairResult()
    with side_file.open("wb") as out:
        for block in _blocks(spool):
            lines = block.split(b"\n")
            if lines[-1] == b"":
                lines.pop()
            longest = max(map(len, lines), default=0) if len(block) > max_line else 0
            if longest <= max_line and not _suspect(block):
                continue
            for line in lines:
                refused = needs_repair(line)
                if len(line) > max_line:
                    result.oversized += 1
                elif not refused:
                    continue
                fixed = repair_line(line) if refused else line + b"\n"
                if fixed is None:
                    result.unrepairable += 1
                    continue
                result.repaired += refused
                result.longest = max(result.longest, len(fixed))
                out.write(fixed)
    return result
