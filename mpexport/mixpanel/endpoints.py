"""Mixpanel's Raw Event Export API: hosts, query parameters and error mapping."""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass

from mpexport.errors import (
    BadParametersError,
    CredentialsError,
    ProxyCredentialsError,
    UsageError,
)
from mpexport.loopback import is_loopback
from mpexport.mixpanel.credentials import CredentialKind, Credentials

# Re-exported (``X as X``): endpoint users read the regions from here too.
from mpexport.mixpanel.regions import DEFAULT_REGION as DEFAULT_REGION
from mpexport.mixpanel.regions import QUERY_HOSTS as QUERY_HOSTS
from mpexport.mixpanel.regions import REGION_HOSTS as REGION_HOSTS
from mpexport.mixpanel.regions import REGIONS as REGIONS
from mpexport.model import Chunk, QueryFilters

EXPORT_PATH = "/api/2.0/export"
ENGAGE_PATH = "/api/query/engage"
MAX_LIMIT = 100_000

# A connection that cannot be made in 10 s will not be made; but the real API
# can think for minutes before its first byte, so reads wait long.
CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 600.0
# Said whenever Mixpanel refuses an OAuth token.
TOKEN_EXPIRED = ("the OAuth token may have expired: get a new one and set MP_OAUTH_TOKEN "
                 "(or the profile's oauth_token)")


@dataclass(frozen=True)
class Endpoint:
    """Where export queries go: ``base_url`` is scheme and host (and port)."""

    base_url: str

    @property
    def export_url(self) -> str:
        """The full URL of the export endpoint."""
        return self.base_url + EXPORT_PATH

    @property
    def engage_url(self) -> str:
        """The full URL of the Query API's profiles (engage) endpoint."""
        return self.base_url + ENGAGE_PATH

    @property
    def host(self) -> str:
        """Host (and port) of the endpoint, for messages and state keys."""
        return urllib.parse.urlsplit(self.base_url).netloc


def resolve_endpoint(region: str = DEFAULT_REGION, api_url: str | None = None) -> Endpoint:
    """Choose the endpoint from ``--region`` or an ``--api-url`` override.

    Plain HTTP is only allowed to a loopback host, so credentials never cross
    a network in clear text.
    """
    region = region.lower()
    if region not in REGION_HOSTS:
        raise UsageError(
            f"unknown region {region!r}", f"use one of {', '.join(sorted(REGION_HOSTS))}"
        )
    if api_url is None:
        return Endpoint(REGION_HOSTS[region])
    parts = urllib.parse.urlsplit(api_url)
    if parts.username is not None or parts.password is not None:
        # It would be logged, printed by --dry-run and kept in the state file.
        raise UsageError(
            "--api-url must not contain credentials (user:password@)",
            "set MP_USERNAME/MP_SECRET or use a profile",
        )
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(
            f"--api-url {api_url!r} is not an http(s) URL", "e.g. https://proxy.example.com"
        )
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        raise UsageError(
            f"--api-url {api_url!r} uses plain HTTP to a host that is not loopback",
            "credentials are only sent over HTTPS; use https://",
        )
    return Endpoint(f"{parts.scheme}://{parts.netloc}")


def resolve_query_endpoint(region: str = DEFAULT_REGION,
                           api_url: str | None = None) -> Endpoint:
    """The Query API's endpoint for ``region``, or ``--api-url`` (checked as for export)."""
    if api_url is not None:
        return resolve_endpoint(region, api_url)
    resolve_endpoint(region)  # the one check of the region's name
    return Endpoint(QUERY_HOSTS[region.lower()])


def validate_filters(filters: QueryFilters) -> None:
    """Reject filters Mixpanel would refuse, before any request is made."""
    if filters.limit is not None and not 1 <= filters.limit <= MAX_LIMIT:
        raise UsageError(
            f"--limit must be between 1 and {MAX_LIMIT}, not {filters.limit}",
            "Mixpanel caps a query's result at 100000 events; --limit is a cap, not paging",
        )


def query_params(chunk: Chunk, filters: QueryFilters, credentials: Credentials) -> dict[str, str]:
    """Query parameters of one chunk's export request."""
    params = {"from_date": chunk.from_date.isoformat(), "to_date": chunk.to_date.isoformat()}
    # Mixpanel wants project_id with a service account or a token, and only then.
    if credentials.sends_project_id:
        params["project_id"] = str(credentials.project_id)
    if filters.events:
        params["event"] = json.dumps(list(filters.events), ensure_ascii=False)
    if filters.where:
        params["where"] = filters.where
    if filters.limit is not None:
        params["limit"] = str(filters.limit)
    return params


def query_text(params: Mapping[str, str]) -> str:
    """``from_date=2024-01-01&to_date=...``: a query's parameters as people read them.

    Not percent-encoded: for ``--dry-run``'s plan and ``-v``'s request lines.
    """
    return "&".join(f"{key}={value}" for key, value in params.items())


def error_text(body: bytes, limit: int = 300) -> str:
    """The ``error`` field of a Mixpanel error body, or its plain text."""
    text = body.decode("utf-8", errors="replace").strip()
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict) and isinstance(parsed.get("error"), str):
        text = parsed["error"]
    text = " ".join(text.split())
    return text[:limit] if text else "(empty body)"


def proxy_credentials_error() -> ProxyCredentialsError:
    """The error for a proxy's 407: Mixpanel never answers it, a proxy between us does."""
    return ProxyCredentialsError(
        "the proxy asked for credentials (HTTP 407 Proxy Authentication Required)",
        "set HTTPS_PROXY (HTTP_PROXY for http:// URLs) to http://USER:PASSWORD@HOST:PORT "
        "with credentials the proxy accepts, or ask its administrators to let mpexport "
        "through",
    )


def raise_for_fatal_status(status: int, body: bytes, api: str,
                           kind: CredentialKind | None = None) -> None:
    """Raise the error for statuses that retrying cannot fix (400, 401, 402, 403, 404, 407...).

    ``api`` names the endpoint ("export", "profiles") in a wrong address's message;
    ``kind`` is the kind of credential sent (:attr:`Credentials.kind`), which
    words a refusal: an OAuth token is short-lived, so its refusal says that
    it may have expired.
    """
    if status == 407:
        raise proxy_credentials_error()
    message = error_text(body)
    if status in (401, 402, 403) or (status == 400 and "authenticate" in message.lower()):
        if kind == "oauth_token" and status != 402:
            # Tokens are short-lived: expiry is the likely cause of any refusal.
            raise CredentialsError(
                f"Mixpanel refused the OAuth token (HTTP {status}): {message}",
                f"check MP_PROJECT_ID: the token has no access to this project, or {TOKEN_EXPIRED}"
                if status == 403 else f"{TOKEN_EXPIRED}; check MP_PROJECT_ID and --region too",
            )
        hints = {
            401: "check MP_USERNAME/MP_SECRET (service accounts expire) or MP_API_SECRET",
            402: "your Mixpanel plan does not allow this export",
            403: "the credentials have no access to this project: check MP_PROJECT_ID",
        }
        raise CredentialsError(
            f"Mixpanel refused the credentials (HTTP {status}): {message}",
            hints.get(status, "check your credentials and --region"),
        )
    if status == 400:
        raise BadParametersError(f"Mixpanel refused the query (HTTP 400): {message}")
    if 400 <= status < 500 and not is_retryable_status(status):
        # 404, 405...: no retry turns a wrong address into a right one.
        raise BadParametersError(
            f"the {api} endpoint answered HTTP {status}: {message}",
            "check --api-url and --region",
        )


def is_retryable_status(status: int) -> bool:
    """True for statuses worth another attempt: 429, 5xx, and odd ones like 408."""
    return status in (408, 425, 429) or status >= 500
