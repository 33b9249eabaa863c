"""mpexport: fast, exact exports from Mixpanel's Raw Event Export API.

The library API is :func:`export`, :func:`sync` and :func:`profiles`; the
CLI (``mpexport``) is a thin layer over them (see ARCHITECTURE.md). Heavy
modules are imported on first use so ``mpexport --help`` starts instantly.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mpexport.version import __version__

if TYPE_CHECKING:
    from mpexport.api import export, sync
    from mpexport.mixpanel.credentials import Credentials
    from mpexport.model import ExportResult
    from mpexport.profile_export.api import profiles

__all__ = ["Credentials", "ExportResult", "__version__", "export", "profiles", "sync"]


def __getattr__(name: str) -> Any:
    if name in ("export", "sync"):
        from mpexport import api

        return getattr(api, name)
    if name == "Credentials":
        from mpexport.mixpanel.credentials import Credentials

        return Credentials
    if name == "profiles":
        # The package is profile_export, not profiles: an imported subpackage
        # would be bound on this module under its name and hide the function.
        from mpexport.profile_export.api import profiles

        return profiles
    if name == "ExportResult":
        from mpexport.model import ExportResult

        return ExportResult
    raise AttributeError(f"module 'mpexport' has no attribute {name!r}")
