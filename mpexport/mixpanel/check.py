"""``mpexport check``: one tiny request that confirms credentials, project and region."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from mpexport.errors import (
    CredentialsError,
    MpexportError,
    ProxyCredentialsError,
    UnavailableError,
)
from mpexport.mixpanel.credentials import Credentials
from mpexport.mixpanel.endpoints import REGION_HOSTS, Endpoint, resolve_endpoint
from mpexport.mixpanel.fetch import Query, fetch_once
from mpexport.mixpanel.transport import FetchSettings, RetryableError, new_session
from mpexport.model import Chunk, QueryFilters


@dataclass(frozen=True)
class CheckOutcome:
    """What the check found: which endpoint answered, and how many events came back."""

    endpoint: Endpoint
    region: str | None
    events: int


def _probe(endpoint: Endpoint, credentials: Credentials, day: dt.date,
           ca_file: str | None) -> int:
    import tempfile
    import threading
    from pathlib import Path

    # One day, at most one event: the cheapest query the API answers.
    query = Query(endpoint, credentials, QueryFilters(limit=1))
    settings = FetchSettings(read_timeout=120.0, ca_file=ca_file)
    with tempfile.TemporaryDirectory(prefix="mpexport-check-") as spool, \
            new_session(ca_file=ca_file) as session:
        path, lines, _size, _digest = fetch_once(
            session, query, Chunk(0, day, day), Path(spool), settings, threading.Event(),
            lambda _n: None,
        )
        path.unlink(missing_ok=True)
    return lines


def check_credentials(
    credentials: Credentials, region: str, api_url: str | None, day: dt.date,
    ca_file: str | None = None,
) -> CheckOutcome:
    """Ask for one event of ``day``; on a credentials error, try the other regions.

    ``ca_file`` is the CA bundle to verify Mixpanel with instead of the
    system's store (``with_ca_file``: ``$REQUESTS_CA_BUNDLE``,
    ``$CURL_CA_BUNDLE``, ``$SSL_CERT_FILE``).

    Raises :class:`CredentialsError` naming the region that does answer (if
    one does), or the original error; a certificate that is not trusted is a
    :class:`~mpexport.errors.CertificateError` and a proxy asking for
    credentials a :class:`~mpexport.errors.ProxyCredentialsError`, as in an
    export.
    """
    endpoint = resolve_endpoint(region, api_url)
    try:
        events = _probe(endpoint, credentials, day, ca_file)
    except RetryableError as exc:
        raise UnavailableError(f"Mixpanel did not answer the check: {exc.reason}",
                               "try again in a minute") from None
    except ProxyCredentialsError:
        raise  # the proxy's, not Mixpanel's: another region would meet the same proxy
    except CredentialsError as error:
        if api_url is not None:
            raise
        for other in sorted(set(REGION_HOSTS) - {region}):
            try:
                _probe(resolve_endpoint(other), credentials, day, ca_file)
            except (MpexportError, RetryableError):
                continue
            raise CredentialsError(
                f"these credentials are refused in region {region} but work in "
                f"region {other}",
                f"pass --region {other} or set MP_REGION={other}",
            ) from error
        raise
    return CheckOutcome(endpoint, None if api_url else region, events)
