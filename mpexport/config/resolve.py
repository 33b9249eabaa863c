"""Which credentials and region a run uses.

1. ``MP_USERNAME``/``MP_SECRET``/``MP_OAUTH_TOKEN``/``MP_API_SECRET`` in the
   environment, when any is set (with ``MP_PROJECT_ID`` and ``MP_REGION``);
2. otherwise a profile: the one ``--profile`` names, else ``$MPEXPORT_PROFILE``,
   else the file's ``default_profile``, else a profile named ``default``.

``--project-id`` and ``--region`` override whichever source is used. Passing
``--profile`` while credential variables are set is an error rather than a
silent choice: either could be the wrong project.

Within one source (the environment, or one profile) several kinds may be
set: a service account is used first, then an OAuth token, then a legacy
project secret (:func:`~mpexport.mixpanel.credentials.credentials_from_env`
decides for both). ``mpexport check`` says which kind answered.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from mpexport.config.load import load_config
from mpexport.config.private_file import mode_warning
from mpexport.config.profiles import (
    ConfigFile,
    Profile,
    validate_profile_name,
    validate_region,
)
from mpexport.errors import CredentialsError, UsageError
from mpexport.mixpanel.credentials import (
    ENV_API_SECRET,
    ENV_OAUTH_TOKEN,
    ENV_PROJECT_ID,
    ENV_REGION,
    ENV_SECRET,
    ENV_USERNAME,
    Credentials,
    credentials_from_env,
)
from mpexport.mixpanel.endpoints import DEFAULT_REGION

PROFILE_ENV = "MPEXPORT_PROFILE"
DEFAULT_PROFILE_NAME = "default"
CREDENTIAL_VARS = (ENV_USERNAME, ENV_SECRET, ENV_OAUTH_TOKEN, ENV_API_SECRET)
LEGACY_SECRET_WARNING = (
    "Mixpanel retires project secrets on 2027-03-03; create a service account"
)


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


def _listed(names: list[str]) -> str:
    """``A``, ``A and B``, ``A, B and C``: names as a sentence lists them."""
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def is_set(env: Mapping[str, str], name: str) -> bool:
    """True when variable ``name`` is set and not empty (empty counts as unset)."""
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
    env_vars = [name for name in CREDENTIAL_VARS if is_set(env, name)]

    if env_vars:
        if profile is not None:
            raise UsageError(
                f"--profile {profile} was given but {_listed(env_vars)} "
                f"{'is' if len(env_vars) == 1 else 'are'} set in the environment, so which "
                "credentials to use is ambiguous",
                "unset the variable(s) or drop --profile",
            )
        credentials = credentials_from_env(env, project_id=project_id_override)
        region = region_flag or (
            validate_region(env[ENV_REGION], ENV_REGION) if is_set(env, ENV_REGION)
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
    ignored = [v for v in (ENV_PROJECT_ID, ENV_REGION) if is_set(env, v)]
    if ignored:
        warnings.append(
            f"{' and '.join(ignored)} ignored: using profile {name}, which is used whole "
            "(pass --project-id/--region to override it)"
        )
    too_open = mode_warning(config.path)
    if too_open:
        warnings.append(too_open)
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
        f"no Mixpanel credentials found: no {ENV_USERNAME}/{ENV_SECRET}/{ENV_OAUTH_TOKEN}/"
        f"{ENV_API_SECRET} in the environment and {where}",
        f"set {ENV_USERNAME}, {ENV_SECRET} and {ENV_PROJECT_ID}, or {ENV_OAUTH_TOKEN} and "
        f"{ENV_PROJECT_ID}, or {ENV_API_SECRET}; "
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
    if not (chosen.username or chosen.oauth_token or chosen.api_secret):
        raise CredentialsError(
            f"{where} has no credentials (username and secret, oauth_token, or api_secret)",
            f"re-run: mpexport config init --profile {chosen.name} ...",
        )
    # The kind that is used (a service account first, then a token) needs a project.
    needs_project = ("a service account" if chosen.username
                     else "an OAuth token" if chosen.oauth_token else None)
    if needs_project and chosen.project_id is None and project_id_override is None:
        raise CredentialsError(
            f"{where} has {needs_project} but no project_id",
            "add project_id to the profile or pass --project-id",
        )
    as_env = {
        ENV_USERNAME: chosen.username or "",
        ENV_SECRET: chosen.secret or "",
        ENV_OAUTH_TOKEN: chosen.oauth_token or "",
        ENV_API_SECRET: chosen.api_secret or "",
        ENV_PROJECT_ID: "" if chosen.project_id is None else str(chosen.project_id),
    }
    return credentials_from_env(as_env, project_id=project_id_override)


def _legacy_warning(credentials: Credentials) -> tuple[str, ...]:
    return (LEGACY_SECRET_WARNING,) if credentials.kind == "api_secret" else ()


def credentials_for_run(
    given: Credentials | None,
    environ: Mapping[str, str],
    *,
    profile: str | None,
    project_id: int | None,
    region: str | None,
    dry_run: bool,
) -> tuple[Credentials | None, str, list[str]]:
    """A run's credentials, region and warnings: ``given``, else the environment or profile.

    A dry run may go without credentials (it fetches nothing): then the
    region comes from ``region``, ``MP_REGION`` or the default.
    """
    from mpexport.mixpanel.credentials import ENV_REGION

    if given is not None:
        return given, region or DEFAULT_REGION, []
    try:
        resolved = resolve_credentials(environ, profile, project_id, region)
    except CredentialsError:
        if not dry_run:
            raise
        return None, region or environ.get(ENV_REGION) or DEFAULT_REGION, []
    return resolved.credentials, resolved.region, list(resolved.warnings)
