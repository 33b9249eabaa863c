"""Every option of a profiles export, each default defined once.

The CLI's option defaults, :func:`mpexport.profile_export.api.profiles`' keyword
defaults and the runner all read them from here. Imported by ``--help``:
keep it free of heavy imports.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mpexport.options import DEFAULT_QPS_LIMIT, DEFAULT_RETRIES

# The Query API allows 5 concurrent queries and 60 per rolling hour per project.
DEFAULT_PAGE_WORKERS = 5
MAX_PAGE_WORKERS = 100
DEFAULT_PROFILE_HOURLY_LIMIT = 60
# Profiles per page as Mixpanel serves them; only estimates use it (--dry-run),
# a run reads the real size from page 0.
EXPECTED_PAGE_SIZE = 1000
USER_TABLE = "profiles"
GROUP_TABLE = "group_profiles"


@dataclass(frozen=True)
class ProfileOptions:
    """Which profiles to export, from where, how fast, and where to put them.

    ``where`` is Mixpanel's expression on profile properties, ``cohort_id``
    keeps a cohort's members, ``group_id`` (Mixpanel's ``data_group_id``)
    exports that group's profiles instead of users, ``properties`` keeps only
    those property names. With
    ``db`` the profiles go into a DuckDB table (``table``; by default
    ``profiles``, or ``group_profiles`` with ``group_id``); otherwise NDJSON
    goes to ``output`` or stdout.
    """

    # What to fetch.
    where: str | None = None
    cohort_id: int | None = None
    group_id: str | None = None
    properties: tuple[str, ...] = ()
    # How fast, and how hard to try.
    workers: int = DEFAULT_PAGE_WORKERS
    retries: int = DEFAULT_RETRIES
    qps_limit: float = DEFAULT_QPS_LIMIT
    hourly_limit: int = DEFAULT_PROFILE_HOURLY_LIMIT
    # Where Mixpanel is, and whose credentials (when not passed explicitly).
    region: str | None = None  # None: the profile's or MP_REGION, else us
    api_url: str | None = None
    project_id: int | None = None
    profile: str | None = None
    # NDJSON output (stdout when None).
    output: Path | None = None
    # DuckDB output.
    db: Path | None = None
    table: str | None = None  # None: USER_TABLE, or GROUP_TABLE with group_id
    memory_limit: str | None = None
    wait_lock: float = 0.0
    # A full export that lists no profiles may empty a table holding some.
    # Off by default: an empty answer is more often an outage or the wrong
    # project than a project without profiles (EmptySnapshotError).
    allow_empty: bool = False
    # Only describe the plan.
    dry_run: bool = False

    @property
    def filtered(self) -> bool:
        """True when only some profiles are asked for: a database upserts them."""
        return bool(self.where) or self.cohort_id is not None

    @property
    def table_name(self) -> str:
        """The table ``db`` loads into."""
        if self.table is not None:
            return self.table
        return GROUP_TABLE if self.group_id is not None else USER_TABLE
