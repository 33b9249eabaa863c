"""Every option of a profiles export, each default defined once.

The CLI's option defaults, :func:`mpexport.profile_export.api.profiles`' keyword
defaults and the runner all read them from here. Imported by ``--help``:
keep it free of heavy imports.
"""

from __future__ import annotations

from dataclasses import dataclass

from mpexport.options import FetchOptions

# The Query API allows 5 concurrent queries and, as the export API, 60 per
# rolling hour per project (FetchOptions' hourly_limit). --workers is checked
# against the same MAX_WORKERS as an events run's (options.check_workers).
DEFAULT_PAGE_WORKERS = 5
# Profiles per page as Mixpanel serves them; only estimates use it (--dry-run),
# a run reads the real size from page 0.
EXPECTED_PAGE_SIZE = 1000
USER_TABLE = "profiles"
GROUP_TABLE = "group_profiles"


@dataclass(frozen=True)
class ProfileOptions(FetchOptions):
    """Which profiles to export, from where, how fast, and where to put them.

    ``where`` is Mixpanel's expression on profile properties, ``cohort_id``
    keeps a cohort's members, ``group_id`` (Mixpanel's ``data_group_id``)
    exports that group's profiles instead of users, ``properties`` keeps only
    those property names. With
    ``db`` the profiles go into a DuckDB table (``table``; by default
    ``profiles``, or ``group_profiles`` with ``group_id``); otherwise NDJSON
    goes to ``output`` or stdout. The fields every fetching run has are
    :class:`~mpexport.options.FetchOptions`'.
    """

    # What to fetch.
    where: str | None = None
    cohort_id: int | None = None
    group_id: str | None = None
    properties: tuple[str, ...] = ()
    # How fast.
    workers: int = DEFAULT_PAGE_WORKERS
    # DuckDB output.
    table: str | None = None  # None: USER_TABLE, or GROUP_TABLE with group_id
    # A full export that lists no profiles may empty a table holding some.
    # Off by default: an empty answer is more often an outage or the wrong
    # project than a project without profiles (EmptySnapshotError).
    allow_empty: bool = False

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
