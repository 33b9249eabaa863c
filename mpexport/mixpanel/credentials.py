"""Mixpanel credentials: a service account, an OAuth bearer token or a legacy project secret."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from mpexport.errors import UsageError

if TYPE_CHECKING:
    from requests import PreparedRequest

ENV_USERNAME = "MP_USERNAME"
ENV_SECRET = "MP_SECRET"
ENV_PROJECT_ID = "MP_PROJECT_ID"
ENV_API_SECRET = "MP_API_SECRET"
ENV_REGION = "MP_REGION"
ENV_OAUTH_TOKEN = "MP_OAUTH_TOKEN"

CredentialKind = Literal["service_account", "oauth_token", "api_secret"]

# What a bearer token may hold: visible ASCII, no space (RFC 6750's b64token
# is narrower; this is only what can travel in a header unchanged). Anything
# else is refused before a request, since requests would quote the whole
# header value, token included, in its own error.
_TOKEN = re.compile(r"[\x21-\x7e]+")


def check_token(token: str, source: str) -> str:
    """``token`` if it can be sent as a bearer token, else a UsageError that does not quote it.

    ``source`` names where it came from (``MP_OAUTH_TOKEN``, a profile).
    """
    if _TOKEN.fullmatch(token):
        return token
    if token.lower().startswith("bearer "):
        reason = "it starts with 'Bearer '", "set the token alone; mpexport adds 'Bearer '"
    else:
        reason = ("it holds a space, a control or a non-ASCII character",
                  "copy the token again, whole and alone")
    raise UsageError(f"{source} is not a token: {reason[0]}", reason[1])


class BearerAuth:
    """``requests`` auth that sends ``Authorization: Bearer TOKEN``; its repr hides the token."""

    def __init__(self, token: str) -> None:
        self._token = token

    def __call__(self, request: PreparedRequest) -> PreparedRequest:
        """Add the header (requests calls this for each request it prepares)."""
        request.headers["Authorization"] = f"Bearer {self._token}"
        return request

    def __repr__(self) -> str:
        return "BearerAuth(<hidden>)"


@dataclass(frozen=True)
class Credentials:
    """A service account (username, secret, project id), an OAuth token or a legacy API secret.

    An OAuth token (``oauth_token``, sent as ``Authorization: Bearer``) needs
    a project id, as a service account does. When several kinds are set, the
    first of service account, OAuth token, legacy secret is used (see
    :attr:`kind`). ``repr`` never shows a secret or a token.
    """

    username: str | None = None
    secret: str | None = field(default=None, repr=False)
    project_id: int | None = None
    api_secret: str | None = field(default=None, repr=False)
    oauth_token: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        # A library caller's token gets the same check as the environment's.
        if self.oauth_token is not None:
            check_token(self.oauth_token, "the oauth_token")

    @property
    def kind(self) -> CredentialKind:
        """Which credential is used: a service account, else a token, else the legacy secret."""
        if self.username is not None:
            return "service_account"
        if self.oauth_token is not None:
            return "oauth_token"
        return "api_secret"

    @property
    def is_service_account(self) -> bool:
        """True for a service account, False for an OAuth token or a legacy project secret."""
        return self.kind == "service_account"

    @property
    def sends_project_id(self) -> bool:
        """True when requests carry ``project_id``: Mixpanel wants it with a service
        account or a token, and only then (a legacy secret names its project itself)."""
        return self.kind != "api_secret" and self.project_id is not None

    def describe(self) -> str:
        """The kind, for messages: never a secret (a service account's username is not one)."""
        if self.kind == "service_account":
            return f"service account {self.username}"
        if self.kind == "oauth_token":
            return "OAuth token"
        return "legacy project secret"

    def auth(self) -> tuple[str, str] | BearerAuth:
        """The ``auth=`` of a ``requests`` call: HTTP Basic, or a bearer token."""
        if self.kind == "oauth_token" and self.oauth_token is not None:
            return BearerAuth(self.oauth_token)
        return self.basic_auth()

    def basic_auth(self) -> tuple[str, str]:
        """The HTTP Basic pair Mixpanel expects for a service account or a legacy secret."""
        if self.username is not None and self.secret is not None:
            return (self.username, self.secret)
        if self.api_secret is not None:
            return (self.api_secret, "")
        raise UsageError("no credentials")

    def secrets(self) -> list[str]:
        """Every secret value, for scrubbing text before it is shown."""
        return [s for s in (self.secret, self.api_secret, self.oauth_token) if s]


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
    """Read credentials from the environment ``env`` (the run's).

    When several kinds are set, a service account (``MP_USERNAME``,
    ``MP_SECRET``) is used first, then an OAuth token (``MP_OAUTH_TOKEN``),
    then a legacy secret (``MP_API_SECRET``): the long-lived, recommended kind
    before a token that expires within hours, and both before the kind
    Mixpanel retires. ``project_id`` (from ``--project-id``) overrides
    ``MP_PROJECT_ID``. Raises :class:`~mpexport.errors.CredentialsError`
    naming the variables to set when none are present.
    """
    from mpexport.errors import CredentialsError

    username = env.get(ENV_USERNAME) or None
    secret = env.get(ENV_SECRET) or None
    api_secret = env.get(ENV_API_SECRET) or None
    # Surrounding whitespace (a newline from a file) is never part of a token.
    oauth_token = (env.get(ENV_OAUTH_TOKEN) or "").strip() or None
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
    if oauth_token:
        check_token(oauth_token, ENV_OAUTH_TOKEN)
        if project_id is None:
            raise CredentialsError(
                "an OAuth token needs a project id",
                f"set {ENV_PROJECT_ID} or pass --project-id",
            )
        return Credentials(oauth_token=oauth_token, project_id=project_id)
    if api_secret:
        return Credentials(api_secret=api_secret, project_id=project_id)
    raise CredentialsError(
        "no Mixpanel credentials found",
        f"set {ENV_USERNAME}, {ENV_SECRET} and {ENV_PROJECT_ID} for a service account, "
        f"{ENV_OAUTH_TOKEN} and {ENV_PROJECT_ID} for an OAuth token, "
        f"or {ENV_API_SECRET} for a legacy project secret",
    )
