"""Reading and checking the config file.

The file is ``config.toml`` in the platform's user config directory, or in
``$MPEXPORT_CONFIG_DIR`` when that is set (tests point it at a temp dir)::

    default_profile = "prod"

    [profiles.prod]
    username = "sa.export"
    secret = "..."
    project_id = 12345
    region = "eu"

    [profiles.tok]
    oauth_token = "..."       # an OAuth bearer token (short-lived: replace it when it expires)
    project_id = 12345

    [profiles.old]
    api_secret = "..."        # a legacy project secret
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mpexport.config.paths import config_path
from mpexport.config.profiles import (
    PROFILE_KEYS,
    PROFILE_NAME_RE,
    STRING_KEYS,
    ConfigFile,
    Profile,
    validate_region,
)
from mpexport.errors import UsageError
from mpexport.mixpanel.credentials import check_token

_TOP_LEVEL_KEYS = frozenset({"default_profile", "profiles"})


def load_config(env: Mapping[str, str] | None = None) -> ConfigFile:
    """Read and check the config file; a missing file is an empty config.

    Raises UsageError naming the file (and the line, for invalid TOML).
    """
    path = config_path(env)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return ConfigFile(path=path, exists=False)
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise UsageError(f"{path} is not UTF-8 text (line {line})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # The message ends "(at line L, column C)"; it never quotes the value.
        raise UsageError(
            f"{path} is not valid TOML: {exc}", "fix or delete the file"
        ) from None
    return _parse_config(path, data)


def _parse_config(path: Path, data: dict[str, Any]) -> ConfigFile:
    unknown = sorted(set(data) - _TOP_LEVEL_KEYS)
    if unknown:
        raise UsageError(
            f"{path}: unknown top-level key(s) {', '.join(unknown)}",
            "expected default_profile and [profiles.NAME] tables",
        )
    default = data.get("default_profile")
    if default is not None and not isinstance(default, str):
        raise UsageError(f"{path}: default_profile must be a string")
    tables = data.get("profiles", {})
    if not isinstance(tables, dict):
        raise UsageError(f"{path}: 'profiles' must be a table of [profiles.NAME] tables")
    profiles: dict[str, Profile] = {}
    for name, table in tables.items():
        where = f"{path}: profile {name!r}"
        if not PROFILE_NAME_RE.fullmatch(name):
            raise UsageError(f"{where}: invalid name", "use 1-64 letters, digits, '_' or '-'")
        if not isinstance(table, dict):
            raise UsageError(f"{where} must be a table: [profiles.{name}]")
        profiles[name] = _parse_profile(name, table, where)
    return ConfigFile(path=path, exists=True, default_profile=default or None, profiles=profiles)


def _parse_profile(name: str, table: dict[str, Any], where: str) -> Profile:
    unknown = sorted(set(table) - set(PROFILE_KEYS))
    if unknown:
        raise UsageError(
            f"{where}: unknown key(s) {', '.join(unknown)}",
            f"expected {', '.join(PROFILE_KEYS)}",
        )
    values: dict[str, Any] = {}
    for key in STRING_KEYS:
        value = table.get(key)
        if value is not None and not isinstance(value, str):
            raise UsageError(f"{where}: {key} must be a string")
        # An empty string counts as unset, as an empty MP_* variable does.
        values[key] = value or None
    project_id = table.get("project_id")
    # bool is an int in Python; TOML true is not a project id.
    if project_id is not None and (
        isinstance(project_id, bool) or not isinstance(project_id, int) or project_id <= 0
    ):
        raise UsageError(f"{where}: project_id must be a positive integer")
    if values["region"] is not None:
        values["region"] = validate_region(values["region"], f"{where}: region")
    if values["oauth_token"] is not None:
        # Surrounding whitespace is never part of a token (as in MP_OAUTH_TOKEN).
        values["oauth_token"] = check_token(values["oauth_token"].strip(),
                                            f"{where}: oauth_token")
    return Profile(name=name, project_id=project_id, **values)
