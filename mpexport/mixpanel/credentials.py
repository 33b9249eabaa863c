"""Mixpanel credentials: a service account or a legacy project secret."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from mpexport.errors import UsageError

ENV_USERNAME = "MP_USERNAME"
ENV_SECRET = "MP_SECRET"
ENV_PROJECT_ID = "MP_PROJECT_ID"
ENV_API_SECRET = "MP_API_SECRET"
ENV_REGION = "MP_REGION"


@dataclass(frozen=True)
class Credentials:
    """Either a service account (username, secret, project id) or a legacy API secret.

    ``repr`` never shows a secret.
    """

    username: str | None = None
    secret: str | None = field(default=None, repr=False)
    project_id: int | None = None
    api_secret: str | None = field(default=None, repr=False)

    @property
    def is_service_account(self) -> bool:
        """True for a service account, False for a legacy project secret."""
        return self.username is not None

    def basic_auth(self) -> tuple[str, str]:
        """The HTTP Basic pair Mixpanel expects for this kind of credential."""
        if self.username is not None and self.secret is not None:
            return (self.username, self.secret)
        if self.api_secret is not None:
            return (self.api_secret, "")
        raise UsageError("no credentials")

    def secrets(self) -> list[str]:
        """Every secret value, for scrubbing text before it is shown."""
        return [s for s in (self.secret, self.api_secret) if s]


def parse_project_id(text: str, source: str) -> int:
    """Parse a project id, naming where it came from when it is not an integer."""
    try:
        value = int(text.strip())
    except ValueError:
        raise UsageError(
            f"{source} {text!r} is not a project id", "it is the integer in your project's URL"
        ) from None
    if value <= 0:
        raise UsageError(f"{source} must be a positive integer, not {value}")
    return value


def credentials_from_env(
    env: Mapping[str, str], project_id: int | None = None
) -> Credentials:
    """Read credentials from the environment ``env`` (the run's), preferring a service account.

    ``project_id`` (from ``--project-id``) overrides ``MP_PROJECT_ID``.
    Raises :class:`~mpexport.errors.CredentialsError` naming the variables to
    set when none are present.
    """
    from mpexport.errors import CredentialsError

    username = env.get(ENV_USERNAME) or None
    secret = env.get(ENV_SECRET) or None
    api_secret = env.get(ENV_API_SECRET) or None
    if project_id is None and env.get(ENV_PROJECT_ID):
        project_id = parse_project_id(env[ENV_PROJECT_ID], ENV_PROJECT_ID)
    if username or secret:
        if not (username and secret):
            missing = ENV_SECRET if username else ENV_USERNAME
            raise CredentialsError(
                f"service account credentials are incomplete: {missing} is not set",
                f"set {ENV_USERNAME}, {ENV_SECRET} and {ENV_PROJECT_ID}",
            )
        if project_id is None:
            raise CredentialsError(
                "a service account needs a project id",
                f"set {ENV_PROJECT_ID} or pass --project-id",
            )
        return Credentials(username=username, secret=secret, project_id=project_id)
    if api_secret:
        return Credentials(api_secret=api_secret, project_id=project_id)
    raise CredentialsError(
        "no Mixpanel credentials found",
        f"set {ENV_USERNAME}, {ENV_SECRET} and {ENV_PROJECT_ID} for a service account, "
        f"or {ENV_API_SECRET} for a legacy project secret",
    )
