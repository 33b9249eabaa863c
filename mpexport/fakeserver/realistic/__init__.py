"""Mixpanel-like event lines for ``Dataset(profile="realistic")``.

Shapes follow Mixpanel's documented limits: about 40 default SDK properties
and 1-2 KB a typical event, string values cut at 255 bytes, list and object
values up to 8 KB and at most 3 deep, events under 1 MB, plus the oddities
old data has (``ODDITY_KINDS``), including lines that are not valid UTF-8.

Benchmarks render millions of these, so everything that does not vary per
event is rendered once per Dataset into JSON fragments (bytes), and a line is
one bytes %-format of a few per-event values and those fragments: a few us an
event, where a dict plus json.dumps costs about 30 us.

Modules, in dependency order: ``vocab`` (what SDKs and users send),
``values`` (single values: picks, the 255-byte cut, JSON fragments),
``properties`` (property sets drawn from an RNG), ``pools`` (those sets
rendered once per Dataset), ``oddities`` (odd-but-legal events) and ``days``
(the hot loop that assembles a day's lines).
"""

from mpexport.fakeserver.realistic.days import MAX_EVENT_BYTES, RealisticDays
from mpexport.fakeserver.realistic.oddities import BIG_EVENT, ODDITY_KINDS
from mpexport.fakeserver.realistic.properties import MAX_COLLECTION_BYTES
from mpexport.fakeserver.realistic.values import MAX_STRING_BYTES

__all__ = [
    "BIG_EVENT",
    "MAX_COLLECTION_BYTES",
    "MAX_EVENT_BYTES",
    "MAX_STRING_BYTES",
    "ODDITY_KINDS",
    "RealisticDays",
]
