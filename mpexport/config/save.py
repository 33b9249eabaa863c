"""Saving a profile: the config file rewritten whole, privately and atomically."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from mpexport.config.load import load_config
from mpexport.config.private_file import write_private
from mpexport.config.profiles import Profile, validate_profile_name, validate_region
from mpexport.config.render import render_config
from mpexport.errors import UsageError
from mpexport.mixpanel.credentials import check_token


def write_profile(
    name: str,
    *,
    username: str | None = None,
    secret: str | None = None,
    project_id: int | None = None,
    api_secret: str | None = None,
    region: str | None = None,
    oauth_token: str | None = None,
    make_default: bool | None = None,
    env: Mapping[str, str] | None = None,
) -> Path:
    """Save (create or replace) profile ``name``, keeping the file's other profiles.

    A service account needs ``username``, ``secret`` and ``project_id``; an
    OAuth token ``oauth_token`` and ``project_id``; a legacy profile
    ``api_secret``. ``make_default`` True sets
    ``default_profile`` to this profile; None (the default) does so only when
    the file has no default yet. Returns the file's path.

    The file is rewritten whole (comments in the old file are not kept) and
    replaced atomically, readable by the current user only: see
    :func:`~mpexport.config.private_file.write_private`.
    """
    validate_profile_name(name)
    username = username or None
    secret = secret or None
    api_secret = api_secret or None
    oauth_token = (oauth_token or "").strip() or None
    if username or secret:
        if not (username and secret):
            raise UsageError("a service account needs both a username and a secret")
        if project_id is None:
            raise UsageError("a service account needs a project id", "pass --project-id")
    elif not (api_secret or oauth_token):
        raise UsageError("nothing to save: give a username and secret, an oauth_token, "
                         "or a legacy api_secret")
    if oauth_token:
        check_token(oauth_token, "the OAuth token")
        if project_id is None:
            raise UsageError("an OAuth token needs a project id", "pass --project-id")
    if project_id is not None and (isinstance(project_id, bool) or project_id <= 0):
        raise UsageError(f"project id must be a positive integer, not {project_id}")
    if region is not None:
        region = validate_region(region, "region")
    new = Profile(name, username, secret, project_id, api_secret, region, oauth_token)

    current = load_config(env)
    profiles = dict(current.profiles)
    profiles[name] = new
    default = current.default_profile
    if make_default or (make_default is None and not default):
        default = name
    write_private(current.path, render_config(default, profiles))
    return current.path
