"""Named credential profiles in a TOML config file, and which credentials a run uses.

The file is ``config.toml`` in the platform's user config directory, or in
``$MPEXPORT_CONFIG_DIR`` when that is set (tests point it at a temp dir)::

    default_profile = "prod"

    [profiles.prod]
    username = "sa.export"
    secret = "..."
    project_id = 12345
    region = "eu"

    [profiles.old]
    api_secret = "..."        # a legacy project secret

Which credentials a run uses (:func:`resolve_credentials`):

1. ``MP_USERNAME``/``MP_SECRET``/``MP_API_SECRET`` in the environment, when
   any is set (with ``MP_PROJECT_ID`` and ``MP_REGION``);
2. otherwise a profile: the one ``--profile`` names, else ``$MPEXPORT_PROFILE``,
   else the file's ``default_profile``, else a profile named ``default``.

``--project-id`` and ``--region`` override whichever source is used. Passing
``--profile`` while credential variables are set is an error rather than a
silent choice: either could be the wrong project.

The file is rewritten whole by :func:`write_profile` (comments are not kept),
atomically, and created with mode 0600 so no other user can read the secrets.
On Windows mode bits are ignored (only "read-only" exists); there the file is
protected by the ACL of the per-user profile directory it lives in.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import sys
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import click
import platformdirs

from mpexport.atomic import write_atomically
from mpexport.errors import CredentialsError, UsageError
from mpexport.mixpanel.credentials import (
    ENV_API_SECRET,
    ENV_PROJECT_ID,
    ENV_REGION,
    ENV_SECRET,
    ENV_USERNAME,
    Credentials,
    credentials_from_env,
)
from mpexport.mixpanel.endpoints import DEFAULT_REGION, REGIONS

CONFIG_DIR_ENV = "MPEXPORT_CONFIG_DIR"
PROFILE_ENV = "MPEXPORT_PROFILE"
CONFIG_FILENAME = "config.toml"
DEFAULT_PROFILE_NAME = "default"

PROFILE_NAME_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
LEGACY_SECRET_WARNING = (
    "Mixpanel retires project secrets on 2027-03-03; create a service account"
)

# Keys of a profile table, in the order they are written, and their types.
_STRING_KEYS = ("username", "secret", "api_secret", "region")
_PROFILE_KEYS = ("username", "secret", "project_id", "api_secret", "region")
SECRET_KEYS = frozenset({"secret", "api_secret"})
_TOP_LEVEL_KEYS = frozenset({"default_profile", "profiles"})
_CREDENTIAL_VARS = (ENV_USERNAME, ENV_SECRET, ENV_API_SECRET)
_MAX_SECRET_LINE = 64 * 1024
# TOML integers are signed 64-bit.
_MAX_TOML_INT = 2**63 - 1


# --------------------------------------------------------------------------- paths


def config_dir(env: Mapping[str, str] | None = None) -> Path:
    """``$MPEXPORT_CONFIG_DIR`` or the platform's user config dir for mpexport."""
    env = os.environ if env is None else env
    override = env.get(CONFIG_DIR_ENV)
    if override:
        return Path(override).expanduser()
    # appauthor=False: %LOCALAPPDATA%\mpexport on Windows, not ...\mpexport\mpexport.
    return platformdirs.user_config_path("mpexport", appauthor=False)


def config_path(env: Mapping[str, str] | None = None) -> Path:
    """The config file's path (it may not exist)."""
    return config_dir(env) / CONFIG_FILENAME


# --------------------------------------------------------------------------- model


@dataclass(frozen=True)
class Profile:
    """One ``[profiles.NAME]`` table; ``repr`` never shows a secret."""

    name: str
    username: str | None = None
    secret: str | None = field(default=None, repr=False)
    project_id: int | None = None
    api_secret: str | None = field(default=None, repr=False)
    region: str | None = None


@dataclass(frozen=True)
class ConfigFile:
    """The parsed config file: its path, default profile name and profiles."""

    path: Path
    exists: bool
    default_profile: str | None = None
    profiles: Mapping[str, Profile] = field(default_factory=dict)


@dataclass(frozen=True)
class ResolvedCredentials:
    """What a run uses: credentials, region, a description of the source, warnings.

    ``source`` is ``"environment"`` or ``"profile NAME (PATH)"``; ``warnings``
    are for stderr (e.g. the legacy project secret retirement).
    """

    credentials: Credentials
    region: str
    source: str
    profile: str | None = None
    warnings: tuple[str, ...] = ()


def validate_profile_name(name: str) -> str:
    """Return ``name`` if it is a valid profile name, else raise UsageError."""
    if not PROFILE_NAME_RE.fullmatch(name):
        raise UsageError(
            f"invalid profile name {name!r}",
            "use 1-64 letters, digits, '_' or '-'",
        )
    return name


def validate_region(region: str, source: str) -> str:
    """Lower-case ``region`` if it is us/eu/in, else a UsageError naming ``source``."""
    value = region.strip().lower()
    if value not in REGIONS:
        raise UsageError(f"{source} {region!r} is not a region", f"use one of {', '.join(REGIONS)}")
    return value


# --------------------------------------------------------------------------- reading


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
    unknown = sorted(set(table) - set(_PROFILE_KEYS))
    if unknown:
        raise UsageError(
            f"{where}: unknown key(s) {', '.join(unknown)}",
            f"expected {', '.join(_PROFILE_KEYS)}",
        )
    values: dict[str, Any] = {}
    for key in _STRING_KEYS:
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
    return Profile(name=name, project_id=project_id, **values)


# --------------------------------------------------------------------------- resolution


def _set(env: Mapping[str, str], name: str) -> bool:
    return bool(env.get(name))


def resolve_credentials(
    env: Mapping[str, str] | None = None,
    profile: str | None = None,
    project_id_override: int | None = None,
    region_override: str | None = None,
) -> ResolvedCredentials:
    """Choose the credentials and region of a run (see the module docstring for the order).

    ``profile`` is ``--profile``; ``project_id_override`` and ``region_override``
    are ``--project-id`` and ``--region`` (None when not given). Raises
    UsageError for a named profile that does not exist or a broken config file,
    CredentialsError when nothing is found anywhere.
    """
    env = os.environ if env is None else env
    region_flag = (
        validate_region(region_override, "--region") if region_override is not None else None
    )
    if profile is not None:
        validate_profile_name(profile)
    env_vars = [name for name in _CREDENTIAL_VARS if _set(env, name)]

    if env_vars:
        if profile is not None:
            raise UsageError(
                f"--profile {profile} was given but {', '.join(env_vars)} "
                "is set in the environment, so which credentials to use is ambiguous",
                "unset the variable(s) or drop --profile",
            )
        credentials = credentials_from_env(env, project_id=project_id_override)
        region = region_flag or (
            validate_region(env[ENV_REGION], ENV_REGION) if _set(env, ENV_REGION)
            else DEFAULT_REGION
        )
        return ResolvedCredentials(
            credentials, region, "environment", None, _legacy_warning(credentials)
        )

    config = load_config(env)
    name, named_by = _profile_name(config, env, profile)
    chosen = config.profiles.get(name)
    if chosen is None:
        if named_by is None:
            raise _nothing_found(config)
        raise _missing_profile(config, name, named_by)

    credentials = _profile_credentials(config, chosen, project_id_override)
    region = region_flag or chosen.region or DEFAULT_REGION
    warnings = list(_legacy_warning(credentials))
    ignored = [v for v in (ENV_PROJECT_ID, ENV_REGION) if _set(env, v)]
    if ignored:
        warnings.append(
            f"{' and '.join(ignored)} ignored: using profile {name}, which is used whole "
            "(pass --project-id/--region to override it)"
        )
    mode_warning = _mode_warning(config.path)
    if mode_warning:
        warnings.append(mode_warning)
    return ResolvedCredentials(
        credentials, region, f"profile {name} ({config.path})", name, tuple(warnings)
    )


def _profile_name(
    config: ConfigFile, env: Mapping[str, str], flag: str | None
) -> tuple[str, str | None]:
    """The profile to use and what named it (None for the implicit ``default``)."""
    if flag is not None:
        return flag, "--profile"
    from_env = env.get(PROFILE_ENV)
    if from_env:
        return validate_profile_name(from_env), PROFILE_ENV
    if config.default_profile:
        return config.default_profile, f"default_profile in {config.path}"
    return DEFAULT_PROFILE_NAME, None


def _missing_profile(config: ConfigFile, name: str, named_by: str) -> UsageError:
    if not config.exists:
        where = f"{config.path} does not exist"
    elif config.profiles:
        where = f"profiles in {config.path}: {', '.join(sorted(config.profiles))}"
    else:
        where = f"{config.path} has no profiles"
    return UsageError(
        f"profile {name!r} (named by {named_by}) not found; {where}",
        f"create it with: mpexport config init --profile {name} --username USER "
        "--project-id ID",
    )


def _nothing_found(config: ConfigFile) -> CredentialsError:
    if config.profiles:
        where = (
            f"{config.path} has no profile {DEFAULT_PROFILE_NAME!r} and no default_profile "
            f"(profiles: {', '.join(sorted(config.profiles))}; pick one with --profile)"
        )
    elif config.exists:
        where = f"no profile in {config.path}"
    else:
        where = f"no config file at {config.path}"
    return CredentialsError(
        f"no Mixpanel credentials found: no {ENV_USERNAME}/{ENV_SECRET}/{ENV_API_SECRET} "
        f"in the environment and {where}",
        f"set {ENV_USERNAME}, {ENV_SECRET} and {ENV_PROJECT_ID}, or {ENV_API_SECRET}; "
        "or save a profile with: mpexport config init --username USER --project-id ID",
    )


def _profile_credentials(
    config: ConfigFile, chosen: Profile, project_id_override: int | None
) -> Credentials:
    """Credentials of a profile, by the same rules as the environment's.

    The profile is mapped onto the MP_* variables and handed to
    :func:`credentials_from_env`, so which kind wins and what is required is
    decided in one place; only the messages are rephrased for a file.
    """
    where = f"profile {chosen.name} in {config.path}"
    if bool(chosen.username) != bool(chosen.secret):
        missing = "secret" if chosen.username else "username"
        raise CredentialsError(
            f"{where} has no {missing}",
            f"re-run: mpexport config init --profile {chosen.name} ...",
        )
    if not (chosen.username or chosen.api_secret):
        raise CredentialsError(
            f"{where} has no credentials (username and secret, or api_secret)",
            f"re-run: mpexport config init --profile {chosen.name} ...",
        )
    if chosen.username and chosen.project_id is None and project_id_override is None:
        raise CredentialsError(
            f"{where} has a service account but no project_id",
            "add project_id to the profile or pass --project-id",
        )
    as_env = {
        ENV_USERNAME: chosen.username or "",
        ENV_SECRET: chosen.secret or "",
        ENV_API_SECRET: chosen.api_secret or "",
        ENV_PROJECT_ID: "" if chosen.project_id is None else str(chosen.project_id),
    }
    return credentials_from_env(as_env, project_id=project_id_override)


def _legacy_warning(credentials: Credentials) -> tuple[str, ...]:
    return () if credentials.is_service_account else (LEGACY_SECRET_WARNING,)


def _mode_warning(path: Path) -> str | None:
    """A warning when the config file is readable by other users (POSIX only)."""
    if os.name != "posix":
        return None
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return None
    if mode & 0o077:
        return f"{path} is readable by other users (mode {mode:04o}); run: chmod 600 {path}"
    return None


# --------------------------------------------------------------------------- writing


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


def _toml_value(value: str | int) -> str:
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
        for key, value in _profile_items(profiles[name]):
            lines.append(f"{key} = {_toml_value(value)}")
        lines.append("")
    return "\n".join(lines)


def _profile_items(profile: Profile) -> list[tuple[str, str | int]]:
    items: list[tuple[str, str | int]] = []
    for key in _PROFILE_KEYS:
        value = getattr(profile, key)
        if value is not None:
            items.append((key, value))
    return items


def write_profile(
    name: str,
    *,
    username: str | None = None,
    secret: str | None = None,
    project_id: int | None = None,
    api_secret: str | None = None,
    region: str | None = None,
    make_default: bool | None = None,
    env: Mapping[str, str] | None = None,
) -> Path:
    """Save (create or replace) profile ``name``, keeping the file's other profiles.

    A service account needs ``username``, ``secret`` and ``project_id``; a
    legacy profile needs ``api_secret``. ``make_default`` True sets
    ``default_profile`` to this profile; None (the default) does so only when
    the file has no default yet. Returns the file's path.

    The directory is created (0700) and the file replaced atomically: the new
    text goes to a temp file in the same directory, created with mode 0600
    (never readable by others, not even briefly), fsynced, then
    ``os.replace``d over the old file. Comments in the old file are not kept.
    On Windows the mode is ignored and the per-user directory's ACL applies.
    """
    validate_profile_name(name)
    username = username or None
    secret = secret or None
    api_secret = api_secret or None
    if username or secret:
        if not (username and secret):
            raise UsageError("a service account needs both a username and a secret")
        if project_id is None:
            raise UsageError("a service account needs a project id", "pass --project-id")
    elif not api_secret:
        raise UsageError("nothing to save: give a username and secret, or a legacy api_secret")
    if project_id is not None and (isinstance(project_id, bool) or project_id <= 0):
        raise UsageError(f"project id must be a positive integer, not {project_id}")
    if region is not None:
        region = validate_region(region, "region")
    new = Profile(name, username, secret, project_id, api_secret, region)

    current = load_config(env)
    profiles = dict(current.profiles)
    profiles[name] = new
    default = current.default_profile
    if make_default or (make_default is None and not default):
        default = name
    text = render_config(default, profiles)
    _atomic_write_private(current.path, text)
    return current.path


def _atomic_write_private(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` atomically; the file is 0600 from creation."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_atomically(path, text.encode("utf-8"), mode=0o600, durable=True)
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    # Makes the rename durable on POSIX; directories cannot be opened on Windows.
    if os.name != "posix":
        return
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# --------------------------------------------------------------------------- showing


MASK = "<hidden>"


def show_config(env: Mapping[str, str] | None = None) -> str:
    """The config as text for ``mpexport config show``, every secret masked.

    A set secret shows as ``secret = <hidden>`` whatever its value or length
    (deliberately not TOML, so it cannot be pasted back as a secret); an empty
    one is simply absent. Other strings are TOML-escaped, so control
    characters cannot reach the terminal.
    """
    env = os.environ if env is None else env
    config = load_config(env)
    lines = [f"# {config.path}"]
    set_vars = [v for v in (*_CREDENTIAL_VARS, ENV_PROJECT_ID, ENV_REGION) if _set(env, v)]
    if any(v in set_vars for v in _CREDENTIAL_VARS):
        lines.append(
            f"# set in the environment, used instead of any profile: {', '.join(set_vars)}"
        )
    if _set(env, PROFILE_ENV):
        lines.append(f"# {PROFILE_ENV} = {toml_string(env[PROFILE_ENV])}")
    if not config.exists:
        lines.append(
            "# (no config file; create one with: "
            "mpexport config init --profile NAME --username USER --project-id ID)"
        )
        return "\n".join(lines) + "\n"
    mode_warning = _mode_warning(config.path)
    if mode_warning:
        lines.append(f"# warning: {mode_warning}")
    lines.append("")
    if config.default_profile:
        lines += [f"default_profile = {toml_string(config.default_profile)}", ""]
    for name in sorted(config.profiles):
        lines.append(f"[profiles.{name}]")
        for key, value in _profile_items(config.profiles[name]):
            shown = MASK if key in SECRET_KEYS else _toml_value(value)
            lines.append(f"{key} = {shown}")
        lines.append("")
    if not config.profiles:
        lines.append("# (no profiles)")
    return "\n".join(lines).rstrip("\n") + "\n"


# --------------------------------------------------------------------------- prompting


def read_secret(
    prompt: str = "Secret",
    *,
    stdin: TextIO | None = None,
    is_tty: bool | None = None,
) -> str:
    """Read a secret: from the terminal without echo, or one line of piped stdin.

    For scripts: ``printf '%s\\n' "$SECRET" | mpexport config init ...``.
    Surrounding whitespace (the newline, a Windows ``\\r``) is stripped; an
    empty secret is a UsageError. Secrets are never taken as arguments, where
    they would land in shell history and ``ps``.
    """
    stream = sys.stdin if stdin is None else stdin
    if is_tty is None:
        try:
            is_tty = stream.isatty()
        except (AttributeError, ValueError):
            is_tty = False
    if is_tty:
        value = str(click.prompt(prompt, hide_input=True, err=True)).strip()
    else:
        line = stream.readline(_MAX_SECRET_LINE)
        value = line.strip()
        if not value:
            raise UsageError(
                f"no {prompt.lower()} on stdin",
                "pipe it in on one line: printf '%s\\n' \"$SECRET\" | mpexport config init ...",
            )
    if not value:
        raise UsageError(f"the {prompt.lower()} is empty")
    return value
