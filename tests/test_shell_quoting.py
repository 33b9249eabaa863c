"""Printed commands paste back into the shell they are for, as the same arguments."""

from __future__ import annotations

import shlex

from hypothesis import example, given
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


QUOTES = "'\u2018\u2019\u201a\u201b"  # PowerShell's single quotes, typographic ones too


def powershell_words(line: str) -> list[str]:
    """PowerShell's reading of a line of bare words and single-quoted strings ('' is ')."""
    words: list[str] = []
    i = 0
    while i < len(line):
        if line[i] == " ":
            i += 1
            continue
        if line[i] in QUOTES:
            word, i = [], i + 1
            while True:
                if line[i] in QUOTES and line[i + 1:i + 2] and line[i + 1] in QUOTES:
                    word.append(line[i + 1])
                    i += 2
                elif line[i] in QUOTES:
                    i += 1
                    break
                else:
                    word.append(line[i])
                    i += 1
            words.append("".join(word))
        else:
            end = line.find(" ", i)
            end = len(line) if end < 0 else end
            word_text = line[i:end]
            # Bare words must hold nothing PowerShell would act on.
            assert not set(word_text) & set("'\"$`@,;|&(){}<>#%"), word_text
            words.append(word_text)
            i = end
    return words


def powershell_51_command_line(args: list[str]) -> str:
    """How Windows PowerShell 5.1 builds a program's command line: quotes passed on bare."""
    return " ".join(f'"{a}"' if not a or any(c.isspace() for c in a) else a for a in args)


@given(st.lists(ARG, min_size=1, max_size=6))
@example(["it\u2019s", "'", "\u2018a\u2019"])
def test_powershell_7_line_gives_the_arguments_back(argv: list[str]) -> None:
    # 7.3+ quotes each argument for the C runtime itself: the words are the arguments.
    assert powershell_words(powershell_line(["mpexport", *argv])) == ["mpexport", *argv]


@given(st.lists(ARG.filter(lambda a: a != ""), min_size=1, max_size=6))
def test_windows_powershell_51_line_gives_the_arguments_back(argv: list[str]) -> None:
    words = powershell_words(powershell_line(["mpexport", *argv], legacy=True))
    assert words[0] == "mpexport"
    assert msvcrt_split(powershell_51_command_line(words[1:])) == argv


def test_a_where_expression_is_quoted_for_each_shell() -> None:
    argv = ["mpexport", "export", "--from", "2024-01-01", "--to", "2024-01-02",
            "--where", 'properties["$os"]=="Linux" and properties["plan"]=="a&b|c%PATH%"',
            "--event", "Checkout, Step 2", "--db", r"C:\Users\José Müller\events db.duckdb"]
    posix = quoted_commands([argv], platform="linux")
    assert shlex.split(posix[0]) == argv
    lines = [line.strip() for line in quoted_commands([argv], platform="win32")]
    assert lines[0::2] == ["in cmd:", "in PowerShell 7:", "in Windows PowerShell 5.1:"]
    assert msvcrt_split(cmd_unescape(lines[1])) == argv
    assert powershell_words(lines[3]) == argv
    assert msvcrt_split(powershell_51_command_line(powershell_words(lines[5])[1:])) == argv[1:]


def test_plain_commands_print_once_on_windows() -> None:
    argv = ["mpexport", "export", "--from", "2024-01-01", "--to", "2024-01-02",
            "--db", r"C:\data\events.duckdb"]
    assert quoted_commands([argv], platform="win32") == ["  " + " ".join(argv)]


def test_powershell_versions_share_a_line_when_no_quote_differs() -> None:
    argv = ["mpexport", "export", "--event", "Sign Up", "--db", r"C:\My Data\e.duckdb"]
    lines = [line.strip() for line in quoted_commands([argv], platform="win32")]
    assert lines[0::2] == ["in cmd:", "in PowerShell:"]
