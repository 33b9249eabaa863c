"""A validated profiles export: the query, the limits, the table; and the ``--dry-run`` text."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mpexport.errors import UsageError
from mpexport.mixpanel.credentials import Credentials
from mpexport.mixpanel.endpoints import DEFAULT_REGION, Endpoint, resolve_query_endpoint
from mpexport.mixpanel.engage import ProfileQuery
from mpexport.mixpanel.transport import FetchSettings
from mpexport.options import check_pacing, check_workers
from mpexport.profile_export.options import EXPECTED_PAGE_SIZE, ProfileOptions
from mpexport.profile_export.resume import SessionState, account_key, fingerprint, pages_for
from mpexport.startup import fetch_settings

# Sizes a dry run estimates for when nothing tells it how many profiles there are.
EXAMPLE_SIZES = (10_000, 100_000, 1_000_000)


@dataclass(frozen=True)
class ProfileRequest:
    """What a profiles run fetches, from where and how fast (options, checked)."""

    options: ProfileOptions
    endpoint: Endpoint
    settings: FetchSettings = field(default_factory=FetchSettings)

    def query(self, credentials: Credentials) -> ProfileQuery:
        """The page requests' description."""
        o = self.options
        return ProfileQuery(self.endpoint, credentials, o.where or None, o.cohort_id,
                            o.group_id, o.properties)

    def fingerprint(self, credentials: Credentials | None) -> str:
        """What a session of this request is keyed by (see :func:`resume.fingerprint`)."""
        o = self.options
        project = credentials.project_id if credentials is not None else o.project_id
        account = (account_key(credentials.username, credentials.secret,
                               credentials.api_secret, credentials.project_id)
                   if credentials is not None else None)
        return fingerprint(base_url=self.endpoint.base_url, account=account, project_id=project,
                           where=o.where, cohort_id=o.cohort_id, group_id=o.group_id,
                           properties=o.properties)


def build_profile_request(options: ProfileOptions, *, region: str | None = None,
                          settings: FetchSettings | None = None) -> ProfileRequest:
    """Validate ``options``; raise :class:`~mpexport.errors.UsageError` if wrong."""
    check_workers(options.workers, "Mixpanel's Query API allows 5 concurrent queries per project")
    check_pacing(options.retries, options.qps_limit, options.hourly_limit)
    if options.cohort_id is not None and options.cohort_id < 1:
        raise UsageError(f"--cohort must be a positive cohort id, not {options.cohort_id}")
    if options.group_id is not None and not options.group_id.strip():
        raise UsageError("--group-id must not be empty", "e.g. --group-id company_id")
    if any(not name for name in options.properties):
        raise UsageError("--property must not be empty")
    if options.db is None:
        used = [flag for flag, value in (("--table", options.table),
                                         ("--memory-limit", options.memory_limit))
                if value is not None]
        if options.wait_lock:
            used.append("--wait-lock")
        if used:
            need = "needs" if len(used) == 1 else "need"
            raise UsageError(f"{', '.join(used)} {need} --db FILE", "or drop them for NDJSON")
        if options.output is not None:
            _check_output(options.output)
    elif options.output is not None:
        raise UsageError("--output and --db exclude each other", "choose one destination")
    else:
        from mpexport.sinks.duckdb.schema import check_table_name

        check_table_name(options.table_name)
    settings = fetch_settings(options, settings)
    endpoint = resolve_query_endpoint(region or options.region or DEFAULT_REGION,
                                      options.api_url)
    return ProfileRequest(options, endpoint, settings)


def _check_output(output: Path) -> None:
    """Refuse an ``--output`` that could not be put in place, before any page is fetched.

    The file is written beside its name and renamed over it at the end, so
    its folder must exist and be writable; a device or pipe is written in
    place (:func:`mpexport.atomic.in_place`) and needs neither.
    """
    from mpexport.atomic import in_place

    if output.is_dir():
        raise UsageError(f"--output {output} is a directory")
    if in_place(output):
        return
    folder = output.parent if str(output.parent) else Path(".")
    if not folder.is_dir():
        raise UsageError(f"the folder of --output {output} does not exist",
                         "create it first or choose another path")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UsageError(f"the folder of --output {output} is not writable",
                         "choose a path in a folder you can write to")


def describe_plan(request: ProfileRequest, credentials: Credentials | None,
                  used_this_hour: Sequence[float], *, resumable: SessionState | None = None,
                  done: int = 0, stored: int | None = None) -> list[str]:
    """The ``--dry-run`` lines: the query, what page 0 does, and how long the pages take.

    How many profiles there are is only known once page 0 answers. A session
    a rerun would continue (``resumable``, with ``done`` pages) gives the
    exact pages left; otherwise the table's ``stored`` rows, or a few sizes
    as examples, give estimates.
    """
    from mpexport.dates import format_duration
    from mpexport.pacing.limiter import budget_wait

    o = request.options
    query = request.query(credentials or Credentials(api_secret="-"))
    fields = "&".join(f"{k}={v}" for k, v in query.form(0, None).items())
    url = request.endpoint.engage_url
    params = "&".join(f"{k}={v}" for k, v in query.params().items())
    lines = [f"POST {url}{'?' + params if params else ''}  {fields or '(no filters)'}"]
    lines.append(f"page 0 opens a session and tells the total; then one query per page of up "
                 f"to {EXPECTED_PAGE_SIZE} profiles, {o.workers} at once")

    def estimate(what: str, queries: int) -> str:
        wait = budget_wait(queries, o.qps_limit, o.hourly_limit, list(used_this_hour),
                           time.time())
        return (f"{what}: {queries} queries; the last can start in {format_duration(wait)} "
                f"at the earliest")

    if resumable is not None:
        left = resumable.pages - done
        lines.append(estimate(
            f"resuming session {resumable.session_id} ({resumable.total} profiles): "
            f"{done} of {resumable.pages} pages stored, {left} pages left", left))
    elif stored:
        pages = pages_for(stored, EXPECTED_PAGE_SIZE)
        lines.append(estimate(f"the table holds {stored} profiles: as many are {pages} "
                              "pages", pages))
    else:
        for size in EXAMPLE_SIZES:
            pages = pages_for(size, EXPECTED_PAGE_SIZE)
            lines.append(estimate(f"{size} profiles would be {pages} pages", pages))
    lines.append(f"rate limits {o.qps_limit:g}/s and {o.hourly_limit}/hour; "
                 f"{len(used_this_hour)} queries used in the last hour")
    return lines
