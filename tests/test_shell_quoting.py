"""Printed commands paste back into the shell they are for, as the same arguments."""

from __future__ import annotations

import shlex

from hypothesis import given
from hypothesis import strategies as st

from mpexport.cli.shell import cmd_line, msvcrt_join, powershell_line, quoted_commands

# Arguments a resume command can hold: dates, paths (spaces, backslashes,
# non-ASCII), --where expressions with quotes, $, %, & and friends.
ARG = st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=0, max_size=20)


def msvcrt_split(line: str) -> list[str]:
    """The Microsoft C runtime's split of a command line (the documented rules)."""
    args: list[str] = []
    current: list[str] = []
    in_quotes = have_arg = False
    i = 0
    while i < len(line):
        char = line[i]
        if char == "\\":
            run = 0
            while i < len(line) and line[i] == "\\":
                run += 1
                i += 1
            if i < len(line) and line[i] == '"':
                current.append("\\" * (run // 2))
                if run % 2:
                    current.append('"')
                    i += 1
                have_arg = True
            else:
                current.append("\\" * run)
                have_arg = True
            continue
        if char == '"':
            if in_quotes and i + 1 < len(line) and line[i + 1] == '"':
                current.append('"')  # "" inside quotes: a literal quote
                i += 2
                continue
            in_quotes = not in_quotes
            have_arg = True
        elif char in " \t" and not in_quotes:
            if have_arg:
                args.append("".join(current))
            current, have_arg = [], False
        else:
            current.append(char)
            have_arg = True
        i += 1
    if have_arg:
        args.append("".join(current))
    return args


def cmd_unescape(line: str) -> str:
    """What cmd.exe hands the program for a typed line free of %VAR% names: carets removed."""
    out, i = [], 0
    while i < len(line):
        if line[i] == "^" and i + 1 < len(line):
            out.append(line[i + 1])
            i += 2
            continue
        out.append(line[i])
        i += 1
    return "".join(out)


@given(st.lists(ARG, min_size=1, max_size=6))
def test_msvcrt_quoting_round_trips(argv: list[str]) -> None:
    assert msvcrt_split(msvcrt_join(argv)) == argv


@given(st.lists(ARG, min_size=1, max_size=6))
def test_cmd_line_round_trips_through_cmd_and_the_c_runtime(argv: list[str]) -> None:
    line = cmd_line(argv)
    # Every character cmd gives a meaning to comes right after a caret.
    i = 0
    while i < len(line):
        if line[i] == "^":
            i += 2
            continue
        assert line[i] not in '()%!^"<>&|', (line, i)
        i += 1
    assert msvcrt_split(cmd_unescape(line)) == argv


@given(st.lists(ARG, min_size=1, max_size=6))
def test_powershell_line_passes_the_rest_verbatim(argv: list[str]) -> None:
    line = powershell_line(["mpexport", *argv])
    if " --% " in line:
        program, rest = line.split(" --% ", 1)
        assert program == "mpexport"
        assert msvcrt_split(rest) == argv
    else:
        assert line.split(" ") == ["mpexport", *argv]


def test_a_where_expression_is_quoted_for_each_shell() -> None:
    argv = ["mpexport", "export", "--from", "2024-01-01", "--to", "2024-01-02",
            "--where", 'properties["$os"]=="Linux" and properties["plan"]=="a&b"',
            "--db", r"C:\Users\José Müller\events db.duckdb"]
    posix = quoted_commands([argv], platform="linux")
    assert shlex.split(posix[0]) == argv
    lines = quoted_commands([argv], platform="win32")
    assert lines[0] == "  in cmd:" and lines[2] == "  in PowerShell:"
    assert msvcrt_split(cmd_unescape(lines[1].strip())) == argv
    assert lines[3].strip().startswith("mpexport --% export --from 2024-01-01")
    assert msvcrt_split(lines[3].strip().split(" --% ", 1)[1]) == argv[1:]


def test_plain_commands_print_once_on_windows() -> None:
    argv = ["mpexport", "export", "--from", "2024-01-01", "--to", "2024-01-02",
            "--db", r"C:\data\events.duckdb"]
    assert quoted_commands([argv], platform="win32") == ["  " + " ".join(argv)]
