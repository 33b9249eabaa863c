"""Commands printed for the user to paste: quoted for the shell they are likely in.

POSIX shells get :func:`shlex.join`. On Windows a command is pasted into
cmd, PowerShell 7 or Windows PowerShell 5.1, which quote differently, so each
form is printed when they differ. The program (the executable, Python) splits
its command line by the Microsoft C runtime's rules, which
:func:`subprocess.list2cmdline` writes: cmd's form is that, with cmd's own
metacharacters escaped. PowerShell's forms single-quote each argument
(nothing inside is expanded); 5.1 also needs the argument's double quotes
escaped for the C runtime, because it passes them on bare (7.3+ escapes them
itself).
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from collections.abc import Sequence

# Characters cmd.exe gives a meaning to on its command line, even inside quotes (%, !)
# or outside them (the rest); a caret makes each one literal.
_CMD_SPECIAL = re.compile(r'([()%!^"<>&|])')
# Arguments no shell changes: no quotes, spaces, $, %, commas (PowerShell's
# arrays), @ (its splatting) or anything else with a meaning.
_PLAIN = re.compile(r"^[A-Za-z0-9_\-+=.:/\\]+$")

# The command line whose C-runtime split is the given arguments.
msvcrt_join = subprocess.list2cmdline


def _for_windows_powershell(arg: str) -> str:
    """``arg`` as Windows PowerShell 5.1 must be handed it for the C runtime to read it back.

    5.1 passes double quotes on bare, and wraps an argument holding any
    whitespace in quotes of its own: the escapes inside are ours to write.
    """
    if re.search(r"\s", arg):
        # list2cmdline's quoted form without its quotes (the leading space forces
        # them): trailing backslashes are doubled, so 5.1's closing quote stays one.
        return msvcrt_join([" " + arg])[2:-1]
    return msvcrt_join([arg]) if arg else arg


def cmd_line(argv: Sequence[str]) -> str:
    """``argv`` for pasting into cmd.exe: every cmd metacharacter caret-escaped."""
    return _CMD_SPECIAL.sub(r"^\1", msvcrt_join(argv))


def powershell_line(argv: Sequence[str], legacy: bool = False) -> str:
    """``argv`` for pasting into PowerShell 7 (or, with ``legacy``, Windows PowerShell 5.1)."""
    words = []
    for arg in argv:
        if _PLAIN.match(arg):
            words.append(arg)
            continue
        text = _for_windows_powershell(arg) if legacy else arg
        # PowerShell reads the typographic single quotes as quotes too: each is doubled.
        words.append("'" + re.sub("(['\u2018\u2019\u201a\u201b])", r"\1\1", text) + "'")
    return " ".join(words)


def quoted_commands(commands: Sequence[Sequence[str]], platform: str | None = None) -> list[str]:
    """Lines that print ``commands`` to paste, indented; labelled per shell on Windows."""
    platform = platform or sys.platform
    if platform != "win32":
        return ["  " + shlex.join(argv) for argv in commands]
    forms = {
        "cmd": [cmd_line(argv) for argv in commands],
        "PowerShell 7": [powershell_line(argv) for argv in commands],
        "Windows PowerShell 5.1": [powershell_line(argv, legacy=True) for argv in commands],
    }
    if forms["PowerShell 7"] == forms["Windows PowerShell 5.1"]:
        forms["PowerShell"] = forms.pop("PowerShell 7")
        del forms["Windows PowerShell 5.1"]
    if len({tuple(lines) for lines in forms.values()}) == 1:
        return ["  " + line for line in forms["cmd"]]
    out = []
    for shell, lines in forms.items():
        out.append(f"  in {shell}:")
        out += ["    " + line for line in lines]
    return out
