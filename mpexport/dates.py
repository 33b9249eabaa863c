"""Parsing of date words (``YYYY-MM-DD``, ``today``, ``yesterday``, ``-N``)."""

from __future__ import annotations

import datetime as dt
import re

from mpexport.errors import UsageError

_RELATIVE = re.compile(r"^-(\d{1,5})$")
_ISO = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def utc_today() -> dt.date:
    """Today's date in UTC (Mixpanel reads dates as UTC days for new projects)."""
    return dt.datetime.now(dt.UTC).date()


def parse_date(text: str, *, today: dt.date, option: str = "date") -> dt.date:
    """Parse one date word relative to ``today``.

    Accepts ``YYYY-MM-DD``, ``today``, ``yesterday`` and ``-N`` (N days ago).
    Raises :class:`UsageError` naming ``option`` when the text is not a date.
    """
    word = text.strip().lower()
    if word == "today":
        return today
    if word == "yesterday":
        return today - dt.timedelta(days=1)
    relative = _RELATIVE.match(word)
    if relative:
        return today - dt.timedelta(days=int(relative.group(1)))
    if _ISO.match(word):
        try:
            return dt.date.fromisoformat(word)
        except ValueError:
            raise UsageError(
                f"{option} {text!r} is not a real calendar date",
                "use YYYY-MM-DD, today, yesterday or -N",
            ) from None
    raise UsageError(
        f"{option} {text!r} is not a date", "use YYYY-MM-DD, today, yesterday or -N"
    )


def parse_range(
    from_text: str, to_text: str, *, today: dt.date
) -> tuple[dt.date, dt.date]:
    """Parse an inclusive ``--from``/``--to`` pair and check its order."""
    start = parse_date(from_text, today=today, option="--from")
    end = parse_date(to_text, today=today, option="--to")
    if start > end:
        raise UsageError(
            f"--from {start.isoformat()} is after --to {end.isoformat()}",
            "swap them or widen the range",
        )
    return start, end


def day_range(first: dt.date, last: dt.date) -> list[dt.date]:
    """Every date from ``first`` to ``last``, both inclusive."""
    return [first + dt.timedelta(days=n) for n in range((last - first).days + 1)]


def check_timezone(name: str) -> str:
    """Return ``name`` if it is an IANA time zone this machine knows, else raise."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise UsageError(
            f"--project-timezone {name!r} is not a known IANA time zone",
            "use a name like Europe/Berlin or America/Los_Angeles (your project settings show it)",
        ) from None
    return name


def today_in(timezone: str | None) -> dt.date:
    """Today's date in the project's time zone (UTC when ``timezone`` is None)."""
    if timezone is None:
        return utc_today()
    from zoneinfo import ZoneInfo

    return dt.datetime.now(ZoneInfo(timezone)).date()


def format_duration(seconds: float) -> str:
    """``75`` -> ``1m15s``; for messages about waits."""
    hours, rest = divmod(round(seconds), 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"
