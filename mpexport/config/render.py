"""The config file's text: TOML written by hand, escaped so any value round-trips."""

from __future__ import annotations

from collections.abc import Mapping

from mpexport.config.profiles import Profile, profile_items, validate_profile_name
from mpexport.errors import UsageError

# TOML integers are signed 64-bit.
_MAX_TOML_INT = 2**63 - 1


def toml_string(value: str) -> str:
    """``value`` as a TOML basic string, escaped so any text round-trips.

    Quote, backslash and every control character (U+0000-U+001F, U+007F) are
    escaped, which also keeps terminal escape sequences out of printed config.
    """
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise UsageError("the value is not valid Unicode text (lone surrogate)") from None
    out = ['"']
    for char in value:
        code = ord(char)
        if char == '"':
            out.append('\\"')
        elif char == "\\":
            out.append("\\\\")
        elif char == "\n":
            out.append("\\n")
        elif char == "\t":
            out.append("\\t")
        elif char == "\r":
            out.append("\\r")
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\u{code:04X}")
        else:
            out.append(char)
    out.append('"')
    return "".join(out)


def toml_value(value: str | int) -> str:
    """``value`` as a TOML string or integer (the only types a profile holds)."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise TypeError(f"only str and int values are written, not {type(value).__name__}")
    if isinstance(value, int):
        if not -_MAX_TOML_INT - 1 <= value <= _MAX_TOML_INT:
            raise UsageError(f"{value} does not fit a TOML integer (64-bit)")
        return str(value)
    return toml_string(value)


def render_config(default_profile: str | None, profiles: Mapping[str, Profile]) -> str:
    """The config file's text (profiles in name order, keys in a fixed order)."""
    lines = ["# mpexport configuration: holds secrets, keep it private (mode 0600).", ""]
    if default_profile:
        lines += [f"default_profile = {toml_string(default_profile)}", ""]
    for name in sorted(profiles):
        validate_profile_name(name)  # bare keys need no quoting
        lines.append(f"[profiles.{name}]")
        for key, value in profile_items(profiles[name]):
            lines.append(f"{key} = {toml_value(value)}")
        lines.append("")
    return "\n".join(lines)
