"""``mpexport config`` and ``mpexport check``: credentials saved, shown and tried."""

from __future__ import annotations

import os
import sys
from typing import TextIO

import click

from mpexport.cli.options import CHECK_EXIT_CODES, CONTEXT, debug_option, echo_err
from mpexport.errors import UsageError
from mpexport.mixpanel.regions import REGIONS

# One line of piped stdin is a secret; this bounds what a wrong pipe can feed in.
_MAX_SECRET_LINE = 64 * 1024


@click.group("config", context_settings=CONTEXT)
def config_group() -> None:
    """Save Mixpanel credentials in named profiles, and show them (secrets masked).

    The file is config.toml in your user config directory ($MPEXPORT_CONFIG_DIR
    overrides the directory), readable only by you (mode 0600; on Windows, an
    access list for your account alone). MP_* variables, when set, are used
    instead of any profile.

    \b
    Examples:
      mpexport config init --profile prod --username sa.export --project-id 12345
      mpexport config show
      mpexport export --profile prod --from -7 --to yesterday --output week.ndjson
    """


@config_group.command("init", context_settings=CONTEXT)
@click.option("--profile", default="default", show_default=True, metavar="NAME",
              help="Profile to create or replace (letters, digits, '_' and '-').")
@click.option("--username", metavar="USER",
              help="Service account username; its secret is prompted for without echo, "
                   "or read as one line from stdin when stdin is not a terminal.")
@click.option("--project-id", type=int, help="Project id (required with --username).")
@click.option("--region", type=click.Choice(REGIONS, case_sensitive=False),
              help="Data residency region of the project [default: us].")
@click.option("--oauth-token", "oauth", is_flag=True,
              help="Save an OAuth bearer token (prompted for, or read from stdin) instead of "
                   "a service account; needs --project-id. Tokens expire: run this again "
                   "with a new one.")
@click.option("--legacy-api-secret", "legacy", is_flag=True,
              help="Save a legacy project secret (prompted for, or read from stdin) instead "
                   "of a service account; Mixpanel retires these on 2027-03-03.")
@click.option("--default/--no-default", "make_default", default=None,
              help="Make this the default profile [default: only if there is none yet].")
@debug_option
def config_init_command(
    profile: str, username: str | None, project_id: int | None, region: str | None,
    oauth: bool, legacy: bool, make_default: bool | None,
) -> None:
    """Create or replace a credentials profile in mpexport's config file.

    The secret (or token) is never an argument (it would end up in shell
    history and in ps): it is asked for without echo, or read as one line from
    stdin when stdin is not a terminal. Other profiles in the file are kept.

    \b
    Examples:
      mpexport config init --profile prod --username sa.export --project-id 12345
      printf '%s\\n' "$SECRET" | mpexport config init --profile ci \\
        --username sa.ci --project-id 12345 --region eu
      printf '%s\\n' "$MP_OAUTH_TOKEN" | mpexport config init --profile me \\
        --oauth-token --project-id 12345
    """
    from mpexport.config.load import load_config
    from mpexport.config.profiles import validate_profile_name
    from mpexport.config.resolve import LEGACY_SECRET_WARNING
    from mpexport.config.save import write_profile

    validate_profile_name(profile)
    if [username is not None, oauth, legacy].count(True) != 1:
        raise click.UsageError("give one of --username USER, --oauth-token or "
                               "--legacy-api-secret")
    for given, flag in ((username is not None, "--username"), (oauth, "--oauth-token")):
        if given and project_id is None:
            raise click.UsageError(f"--project-id is required with {flag}")
    existing = load_config()  # a broken file fails here, before the secret is asked for
    if oauth:
        token = read_secret("OAuth token")
        path = write_profile(profile, oauth_token=token, project_id=project_id, region=region,
                             make_default=make_default)
    elif legacy:
        secret = read_secret("API secret")
        path = write_profile(profile, api_secret=secret, project_id=project_id, region=region,
                             make_default=make_default)
        echo_err(f"mpexport: warning: {LEGACY_SECRET_WARNING}")
    else:
        secret = read_secret("Secret")
        path = write_profile(profile, username=username, secret=secret, project_id=project_id,
                             region=region, make_default=make_default)
    verb = "replaced" if profile in existing.profiles else "saved"
    echo_err(f"mpexport: {verb} profile {profile} in {path}")


@config_group.command("show", context_settings=CONTEXT)
@debug_option
def config_show_command() -> None:
    """Print the config file's path and profiles, every secret shown as <hidden>.

    Also says which MP_* variables are set, since they are used instead of
    any profile.

    \b
    Example:
      mpexport config show
    """
    from mpexport.config.show import show_config

    click.echo(show_config(), nl=False)


@click.command("check", context_settings=CONTEXT, epilog=CHECK_EXIT_CODES)
@click.option("--region", type=click.Choice(REGIONS, case_sensitive=False),
              default=None, help="Region to check [default: as for export].")
@click.option("--api-url", metavar="URL", help="Replace scheme and host.")
@click.option("--project-id", type=int, help="Project id [env MP_PROJECT_ID].")
@click.option("--profile", metavar="NAME", help="Saved profile to check.")
@debug_option
def check_command(region: str | None, api_url: str | None, project_id: int | None,
                  profile: str | None) -> None:
    """Confirm the credentials, the project and the region with one tiny request.

    Asks Mixpanel for at most one event of yesterday and says which kind of
    credential answered (service account, OAuth token or legacy secret). If
    the credentials are refused, tries the other regions and says which one
    answers. Exit 0 when they work, 3 when they do not.

    \b
    Example:
      mpexport check --profile prod
    """
    import datetime as dt

    from mpexport.config.resolve import resolve_credentials
    from mpexport.mixpanel.check import check_credentials
    from mpexport.mixpanel.transport import with_ca_file

    resolved = resolve_credentials(os.environ, profile, project_id, region)
    for warning in resolved.warnings:
        echo_err(f"mpexport: warning: {warning}")
    day = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
    outcome = check_credentials(resolved.credentials, resolved.region, api_url, day,
                                with_ca_file(None, os.environ).ca_file)
    project = resolved.credentials.project_id
    # Which kind answered: with several set, the one the order chose.
    echo_err(f"mpexport: OK: {resolved.credentials.describe()} ({resolved.source}) can export"
             + (f" project {project}" if project else "")
             + f" from {outcome.endpoint.host}"
             + (f" (region {outcome.region})" if outcome.region else ""))


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
