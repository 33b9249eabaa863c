"""Authentication and parameter validation of an export request."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import re
from dataclasses import dataclass

from mpexport.fakeserver.config import ServerConfig
from mpexport.fakeserver.where import WhereError, compile_where

MAX_LIMIT = 100_000
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


class ApiError(Exception):
    """A refusal the handler turns into a JSON error response."""

    def __init__(self, status: int, error: str) -> None:
        super().__init__(error)
        self.status = status
        self.error = error


@dataclass(frozen=True)
class ExportQuery:
    """A validated export query."""

    from_date: dt.date
    to_date: dt.date
    events: tuple[str, ...] | None
    where: str | None
    limit: int | None
    time_in_ms: bool

    def dates(self) -> list[dt.date]:
        """Every day the query covers."""
        return [
            self.from_date + dt.timedelta(days=i)
            for i in range((self.to_date - self.from_date).days + 1)
        ]


def _basic_credentials(header: str | None) -> tuple[str, str] | None:
    if not header or not header.lower().startswith("basic "):
        return None
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else None


def _bearer_token(header: str | None) -> str | None:
    if not header or not header.lower().startswith("bearer "):
        return None
    return header[7:].strip() or None


def auth_kind(header: str | None) -> str:
    """The kind of credential ``header`` carries, right or wrong, for the stats (never its value).

    ``"oauth_token"`` for a bearer token, ``"service_account"`` or
    ``"api_secret"`` for HTTP Basic with or without a password, ``""`` for none.
    """
    if _bearer_token(header) is not None:
        return "oauth_token"
    creds = _basic_credentials(header)
    if creds is None:
        return ""
    return "service_account" if creds[1] else "api_secret"


def authenticate(config: ServerConfig, header: str | None, params: dict[str, str]) -> None:
    """Check the credentials and ``project_id``; raise ``ApiError`` if refused.

    A service account (HTTP Basic), an OAuth token (``Authorization: Bearer``)
    or a legacy secret (HTTP Basic, no password). Like Mixpanel, a service
    account or a token needs ``project_id``, and a refused one is
    ``bad_auth_status`` (401), whatever its kind.
    """
    creds = _basic_credentials(header)
    service_account = creds == (config.username, config.secret)
    legacy = creds == (config.api_secret, "")
    token = _bearer_token(header)
    oauth = token is not None and token == config.oauth_token
    if not (service_account or legacy or oauth):
        raise ApiError(config.bad_auth_status, "Unable to authenticate request")
    raw = params.get("project_id")
    if raw is None:
        if service_account:
            raise ApiError(400, "project_id is required when using a service account")
        if oauth:
            raise ApiError(400, "project_id is required when using an OAuth token")
        return
    try:
        project_id = int(raw)
    except ValueError:
        raise ApiError(400, f"invalid project_id: {raw!r}") from None
    if project_id != config.project_id:
        raise ApiError(403, f"You do not have access to project {project_id}")


def _date(params: dict[str, str], name: str) -> dt.date:
    raw = params.get(name)
    if raw is None or raw == "":
        raise ApiError(400, f"{name} is required")
    try:
        if not _DATE.fullmatch(raw):
            raise ValueError(raw)
        return dt.date.fromisoformat(raw)
    except ValueError:
        raise ApiError(400, f"invalid {name}: {raw!r}, expected YYYY-MM-DD") from None


def _events(raw: str | None) -> tuple[str, ...] | None:
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ApiError(400, f"event must be a JSON array of event names, got {raw!r}")
    return tuple(value)


def _limit(raw: str | None) -> int | None:
    if raw is None:
        return None
    try:
        limit = int(raw)
    except ValueError:
        raise ApiError(400, f"invalid limit: {raw!r}") from None
    if limit < 0:
        raise ApiError(400, "limit must be >= 0")
    if limit > MAX_LIMIT:
        raise ApiError(400, f"limit must be <= {MAX_LIMIT}")
    return limit


def parse_query(config: ServerConfig, params: dict[str, str]) -> ExportQuery:
    """Validate the export parameters; raise ``ApiError`` (400) when they are bad."""
    from_date = _date(params, "from_date")
    to_date = _date(params, "to_date")
    if from_date > to_date:
        raise ApiError(400, "from_date cannot be later than to_date")
    if to_date > config.current_date():
        raise ApiError(400, "to_date cannot be later than today")
    where = params.get("where")
    if where is not None:
        try:
            compile_where(where)
        except WhereError as exc:
            raise ApiError(400, f"invalid where expression: {exc}") from None
    return ExportQuery(
        from_date=from_date,
        to_date=to_date,
        events=_events(params.get("event")),
        where=where,
        limit=_limit(params.get("limit")),
        time_in_ms=params.get("time_in_ms", "").lower() in ("true", "1"),
    )
