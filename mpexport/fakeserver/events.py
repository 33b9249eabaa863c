"""Generation of single synthetic Mixpanel events from a seeded RNG.

Everything here is a pure function of the ``random.Random`` handed in, so a
day's events are reproducible in any process.
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

T = TypeVar("T")

Props = dict[str, Any]

DAY_SECONDS = 86_400

# Weighted so that the volume looks like a product: many page views, few purchases.
EVENT_WEIGHTS: tuple[tuple[str, int], ...] = (
    ("Page View", 30),
    ("App Open", 10),
    ("Login", 10),
    ("Search", 10),
    ("Add To Cart", 8),
    ("Sign Up", 5),
    ("Purchase", 5),
    ("Video Play", 5),
    ("Logout", 5),
    ("Checkout Started", 4),
    ("Share", 3),
    ("Error", 3),
)
EVENT_NAMES: tuple[str, ...] = tuple(name for name, _ in EVENT_WEIGHTS)
_CUM_WEIGHTS: list[int] = []
for _name, _weight in EVENT_WEIGHTS:
    _CUM_WEIGHTS.append((_CUM_WEIGHTS[-1] if _CUM_WEIGHTS else 0) + _weight)

BROWSERS = ("Chrome", "Safari", "Firefox", "Edge", "Mobile Safari", "Samsung Internet")
OSES = ("Windows", "Mac OS X", "Linux", "iOS", "Android", "Chrome OS")
# Geo values are deliberately non-ASCII so every consumer meets UTF-8 early.
CITIES: tuple[tuple[str, str], ...] = (
    ("San Francisco", "US"),
    ("New York", "US"),
    ("São Paulo", "BR"),
    ("Zürich", "CH"),
    ("東京", "JP"),
    ("서울", "KR"),
    ("Москва", "RU"),
    ("القاهرة", "EG"),
    ("München", "DE"),
    ("Kraków", "PL"),
    ("北京", "CN"),
    ("Reykjavík", "IS"),
)
PRODUCTS = (
    "Café Crème ☕",
    "Green Tea 🍵",
    "Tシャツ",
    "Laptop Sleeve",
    "Rocket 🚀 Plush",
    "Ñandú Poster",
    "Headphones",
    "雨傘",
)
SEARCH_TERMS = ("shoes", "naïve bayes", "寿司", "emoji 😀", "", "laptop", "crème brûlée")
_TAGS = ("sale", "new", "gift", "bio", "限定")
PAGES = ("/", "/pricing", "/docs", "/blog/über-uns", "/product/42", "/checkout", "/404")
# Raw U+2028/U+2029 inside strings break naive "split on any newline" readers.
TRICKY_TEXT = "line one\u2028line two\u2029end 🎉 日本語 Ελληνικά"


def _pick(rng: random.Random, seq: Sequence[T]) -> T:
    # rng.random() is several times cheaper than choice()/randrange(), and the
    # data volume (millions of events in benchmarks) makes that matter.
    return seq[int(rng.random() * len(seq))]


def _int(rng: random.Random, low: int, high: int) -> int:
    """An int in [low, high), like randrange but faster."""
    return low + int(rng.random() * (high - low))


def pick_event_name(rng: random.Random) -> str:
    """Choose an event name with the realistic weights above."""
    return EVENT_NAMES[bisect.bisect_right(_CUM_WEIGHTS, rng.random() * _CUM_WEIGHTS[-1])]


def _page_view(rng: random.Random) -> Props:
    return {
        "page": _pick(rng, PAGES),
        "referrer": _pick(rng, (None, "https://www.google.com/", "https://t.co/x")),
        "load_ms": _int(rng, 50, 5000),
    }


def _search(rng: random.Random) -> Props:
    return {"query": _pick(rng, SEARCH_TERMS), "results": _int(rng, 0, 200)}


def _cart(rng: random.Random) -> Props:
    return {
        "product": _pick(rng, PRODUCTS),
        "quantity": _int(rng, 1, 5),
        "price": round(rng.uniform(0.5, 500.0), 2),
        "tags": list(_TAGS[_int(rng, 0, len(_TAGS)) :][: _int(rng, 0, 3)]),
    }


def _purchase(rng: random.Random) -> Props:
    items = [
        {"sku": f"SKU-{_int(rng, 0, 10_000)}", "name": _pick(rng, PRODUCTS)}
        for _ in range(_int(rng, 1, 4))
    ]
    return {
        "amount": round(rng.uniform(1.0, 2000.0), 2),
        "currency": _pick(rng, ("USD", "EUR", "JPY", "BRL")),
        "items": items,
        "coupon": _pick(rng, (None, "WELCOME10", "ÉTÉ2024")),
        "first_purchase": rng.random() < 0.2,
    }


def _sign_up(rng: random.Random) -> Props:
    return {
        "plan": _pick(rng, ("free", "pro", "enterprise")),
        "utm": {"source": _pick(rng, ("google", "newsletter", None)), "campaign": "spring"},
        "invited": rng.random() < 0.3,
    }


def _login(rng: random.Random) -> Props:
    return {"method": _pick(rng, ("password", "google", "sso")), "success": rng.random() < 0.95}


def _video(rng: random.Random) -> Props:
    return {"video_id": _int(rng, 1, 900), "position_s": round(rng.uniform(0, 3600), 1)}


def _error(rng: random.Random) -> Props:
    return {
        "code": _pick(rng, (400, 404, 500)),
        "message": _pick(rng, ("boom", "Zeitüberschreitung")),
    }


def _nothing(rng: random.Random) -> Props:
    return {}


_EXTRA: dict[str, Callable[[random.Random], Props]] = {
    "Page View": _page_view,
    "Search": _search,
    "Add To Cart": _cart,
    "Checkout Started": _cart,
    "Purchase": _purchase,
    "Sign Up": _sign_up,
    "Login": _login,
    "Video Play": _video,
    "Error": _error,
}


def event_properties(rng: random.Random, name: str) -> Props:
    """The properties particular to an event named ``name`` (may be empty)."""
    return _EXTRA.get(name, _nothing)(rng)


def make_event(
    rng: random.Random, day_start: int, processing_delay_ms: int = 0
) -> tuple[str, Props]:
    """Build one event within the UTC day starting at epoch ``day_start``.

    ``time`` is stored in milliseconds; renderers divide it for second precision.
    ``processing_delay_ms`` pushes ``mp_processing_time_ms`` later (late data).
    """
    name = pick_event_name(rng)
    time_ms = (day_start + _int(rng, 0, DAY_SECONDS)) * 1000 + _int(rng, 0, 1000)
    distinct_id = "" if rng.random() < 0.03 else f"u-{_int(rng, 0, 5000)}"
    city, country = _pick(rng, CITIES)
    props: Props = {
        "time": time_ms,
        "distinct_id": distinct_id,
        "$insert_id": f"{rng.getrandbits(64):016x}",
        "mp_processing_time_ms": time_ms + _int(rng, 200, 90_000) + processing_delay_ms,
        "$mp_api_endpoint": "api.mixpanel.com",
        "$browser": _pick(rng, BROWSERS),
        "$os": _pick(rng, OSES),
        "$city": city,
        "mp_country_code": country,
    }
    props.update(event_properties(rng, name))
    return name, props


def long_text(rng: random.Random) -> str:
    """A string value of 20-100 kB in UTF-8, multi-byte characters included."""
    unit = "Lorem ipsum — 長い文字列 🧪 "
    repeats = _int(rng, 20_000, 100_000) // len(unit.encode("utf-8")) + 1
    return unit * repeats
