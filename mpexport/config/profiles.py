"""What a profile is: the parsed config file, its profiles, and the checks on their values."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from mpexport.errors import UsageError
from mpexport.mixpanel.regions import REGIONS

PROFILE_NAME_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")

# Keys of a profile table, in the order they are written, and their types.
STRING_KEYS = ("username", "secret", "oauth_token", "api_secret", "region")
PROFILE_KEYS = ("username", "secret", "project_id", "oauth_token", "api_secret", "region")
SECRET_KEYS = frozenset({"secret", "oauth_token", "api_secret"})


@dataclass(frozen=True)
class Profile:
    """One ``[profiles.NAME]`` table; ``repr`` never shows a secret."""

    name: str
    username: str | None = None
    secret: str | None = field(default=None, repr=False)
    project_id: int | None = None
    api_secret: str | None = field(default=None, repr=False)
    region: str | None = None
    # Last, so positional construction keeps its meaning.
    oauth_token: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class ConfigFile:
    """The parsed config file: its path, default profile name and profiles."""

    path: Path
    exists: bool
    default_profile: str | None = None
    profiles: Mapping[str, Profile] = field(default_factory=dict)


def validate_profile_name(name: str) -> str:
    """Return ``name`` if it is a valid profile name, else raise UsageError."""
    if not PROFILE_NAME_RE.fullmatch(name):
        raise UsageError(
            f"invalid profile name {name!r}",
            "use 1-64 letters, digits, '_' or '-'",
        )
    return name


def validate_region(region: str, source: str) -> str:
    """Lower-case ``region`` if it is a known region, else a UsageError naming ``source``."""
    value = region.strip().lower()
    if value not in REGIONS:
        raise UsageError(f"{source} {region!r} is not a region", f"use one of {', '.join(REGIONS)}")
    return value


def profile_items(profile: Profile) -> list[tuple[str, str | int]]:
    """The profile's set keys and values, in the order they are written."""
    items: list[tuple[str, str | int]] = []
    for key in PROFILE_KEYS:
        value = getattr(profile, key)
        if value is not None:
            items.append((key, value))
    return items
