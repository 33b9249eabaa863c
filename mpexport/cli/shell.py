"""Commands printed for the user to paste: quoted for the shell they are likely in.

POSIX shells get :func:`shlex.join`. On Windows a command is pasted into cmd
or PowerShell, which quote differently, so both forms are printed when they
differ. Both start from the Microsoft C runtime's rules, which the
executable (and Python) use to split a command line into arguments.
"""

from __future__ import annotations

import re
import shlex
import sys
from collections.abc import Sequence

# Characters cmd.exe gives a meaning to on its command line, even inside quotes (%, !)
# or outside them (the rest); a caret makes each one literal.
_CMD_SPECIAL = re.compile(r'([()%!^"<>&|])')
_NEEDS_QUOTES = re.compile(r'[\s"]')
_PLAIN = re.compile(r"^[A-Za-z0-9_\-+=.,:/\\@]+$")


def msvcrt_quote(arg: str) -> str:
    """One argument quoted so the C runtime's parser gives ``arg`` back unchanged."""
    if arg and not _NEEDS_QUOTES.search(arg):
        return arg
    quoted, backslashes = ['"'], 0
    for char in arg:
        if char == "\\":
            backslashes += 1
            continue
        if char == '"':
            quoted.append("\\" * (2 * backslashes + 1) + '"')
        else:
            quoted.append("\\" * backslashes + char)
        backslashes = 0
    quoted.append("\\" * (2 * backslashes) + '"')
    return "".join(quoted)


def msvcrt_join(argv: Sequence[str]) -> str:
    """The command line whose C-runtime split is ``argv``."""
    return " ".join(msvcrt_quote(arg) for arg in argv)


def cmd_line(argv: Sequence[str]) -> str:
    """``argv`` for pasting into cmd.exe: every cmd metacharacter caret-escaped."""
    return _CMD_SPECIAL.sub(r"^\1", msvcrt_join(argv))


def powershell_line(argv: Sequence[str]) -> str:
    """``argv`` for pasting into PowerShell 5.1 or 7.

    After ``--%`` PowerShell passes the rest of the line to the program as
    typed (``$`` and quotes untouched), so the C-runtime form works in both
    versions, whose own quoting rules for programs differ.
    """
    if all(_PLAIN.match(arg) for arg in argv):
        return " ".join(argv)
    return " ".join([argv[0], "--%", msvcrt_join(argv[1:])])


def quoted_commands(commands: Sequence[Sequence[str]], platform: str | None = None) -> list[str]:
    """Lines that print ``commands`` to paste, indented; labelled per shell on Windows."""
    platform = platform or sys.platform
    if platform != "win32":
        return ["  " + shlex.join(argv) for argv in commands]
    cmd = [cmd_line(argv) for argv in commands]
    powershell = [powershell_line(argv) for argv in commands]
    if cmd == powershell:
        return ["  " + line for line in cmd]
    return (["  in cmd:"] + ["    " + line for line in cmd]
            + ["  in PowerShell:"] + ["    " + line for line in powershell])
