"""Generation of single synthetic Mixpanel events from a seeded RNG.

Everything here is a pure function of the ``random.Random`` handed in, so a
day's events are reproducible in any process.
"""

from __future__ import annotations

import bisect
import json
import random
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

T = TypeVar("T")

Props = dict[str, Any]

DAY_SECONDS = 86_400
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))

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


# --- vocabulary and helpers of the realistic profile (realistic.py) ---------------------

MAX_STRING_BYTES = 255

# (browser, versions, os, os versions, $device or "", (width, height) screens)
WEB_PLATFORMS: tuple[
    tuple[str, tuple[float, ...], str, tuple[str, ...], str, tuple[tuple[int, int], ...]], ...
] = (
    ("Chrome", (120, 121, 122, 123), "Windows", ("10", "11"), "", ((1920, 1080), (1366, 768))),
    ("Chrome", (121, 122), "Mac OS X", ("10.15.7",), "", ((1440, 900), (1728, 1117))),
    ("Safari", (16.6, 17.2, 17.4), "Mac OS X", ("10.15.7", "14.3"), "", ((2560, 1440),)),
    ("Firefox", (122.0, 123.0), "Linux", ("x86_64",), "", ((1920, 1080),)),
    ("Edge", (121, 122), "Windows", ("10",), "", ((1536, 864), (1280, 720))),
    ("Mobile Safari", (17.2, 17.3), "iOS", ("17.2", "17.3.1"), "iPhone", ((390, 844),)),
    ("Chrome", (122,), "Android", ("13", "14"), "Android", ((412, 915), (360, 800))),
    ("Samsung Internet", (23.0,), "Android", ("13",), "Android", ((384, 854),)),
)
WEB_LIB_VERSIONS = ("2.49.0", "2.48.1", "2.47.0")
# (mp_lib, lib version, os, os versions, manufacturer, (model, $device), (width, height))
APP_PLATFORMS: tuple[
    tuple[str, str, str, tuple[str, ...], str, tuple[tuple[str, str], ...], tuple[int, int]], ...
] = (
    (
        "swift",
        "4.2.0",
        "iOS",
        ("17.3.1", "17.4", "16.7.5"),
        "Apple",
        (("iPhone15,2", "iPhone"), ("iPhone14,5", "iPhone")),
        (1179, 2556),
    ),
    ("swift", "4.2.0", "iPadOS", ("17.3",), "Apple", (("iPad13,18", "iPad"),), (1640, 2360)),
    (
        "android",
        "7.3.1",
        "Android",
        ("14", "13", "12"),
        "samsung",
        (("SM-S918B", "dm3q"), ("SM-A546B", "a54x")),
        (1080, 2340),
    ),
    ("android", "7.3.1", "Android", ("14",), "Google", (("Pixel 8", "shiba"),), (1080, 2400)),
    (
        "react-native",
        "3.0.2",
        "Android",
        ("11",),
        "Xiaomi",
        (("Redmi Note 10", "mojito"),),
        (1080, 2400),
    ),
)
# An empty carrier is what a Wi-Fi-only device reports.
CARRIERS = ("Verizon", "T-Mobile", "AT&T", "Vodafone", "NTT DOCOMO", "中国移动", "")
APP_VERSIONS = (("5.12.0", "5120"), ("5.11.2", "5112"), ("5.10.0", "5100"))
# (city, region, country, time zone, language); non-ASCII on purpose.
GEOS: tuple[tuple[str, str, str, str, str], ...] = (
    ("San Francisco", "California", "US", "America/Los_Angeles", "en-US"),
    ("New York", "New York", "US", "America/New_York", "en-US"),
    ("São Paulo", "São Paulo", "BR", "America/Sao_Paulo", "pt-BR"),
    ("Zürich", "Zurich", "CH", "Europe/Zurich", "de-CH"),
    ("東京", "東京都", "JP", "Asia/Tokyo", "ja-JP"),
    ("서울", "서울특별시", "KR", "Asia/Seoul", "ko-KR"),
    ("Москва", "Москва", "RU", "Europe/Moscow", "ru-RU"),
    ("القاهرة", "محافظة القاهرة", "EG", "Africa/Cairo", "ar-EG"),
    ("München", "Bayern", "DE", "Europe/Berlin", "de-DE"),
    ("Kraków", "Małopolskie", "PL", "Europe/Warsaw", "pl-PL"),
    ("London", "England", "GB", "Europe/London", "en-GB"),
    ("Bengaluru", "Karnataka", "IN", "Asia/Kolkata", "en-IN"),
    ("Paris", "Île-de-France", "FR", "Europe/Paris", "fr-FR"),
    ("Ciudad de México", "Ciudad de México", "MX", "America/Mexico_City", "es-MX"),
)
# (referrer, referring domain, search engine or "")
REFERRERS: tuple[tuple[str, str, str], ...] = (
    ("https://www.google.com/", "www.google.com", "google"),
    ("https://www.bing.com/", "www.bing.com", "bing"),
    ("https://duckduckgo.com/", "duckduckgo.com", "duckduckgo"),
    ("https://t.co/", "t.co", ""),
    ("https://www.facebook.com/", "www.facebook.com", ""),
    ("https://news.ycombinator.com/", "news.ycombinator.com", ""),
)
# (utm_source, utm_medium, campaigns)
UTM_SOURCES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("google", "cpc", ("spring_sale_2024", "brand_search", "competitor_kw")),
    ("newsletter", "email", ("weekly_2024_10", "reactivation")),
    ("facebook", "paid_social", ("lookalike_1pct", "retargeting")),
    ("partner-blog", "referral", ("affiliate_q1",)),
)
UTM_TERMS = ("running shoes", "café crème", "best laptop 2024", "寿司 宅配", "")
HOSTS = ("https://www.example.com", "https://shop.example.com", "https://app.example.com")
PATHS = (
    "/",
    "/pricing",
    "/docs/getting-started",
    "/blog/über-uns",
    "/product/42",
    "/checkout",
    "/cart",
    "/search",
    "/account/settings",
    "/404",
)
TITLES = (
    "Home | Example",
    "Pricing — Example",
    "Über uns | Example Blog",
    "商品詳細 | Example Shop",
    "Checkout",
    "Search results for “crème brûlée”",
    "Настройки аккаунта",
    "Page not found",
)
# Text for values that hit the 255-byte cut: multi-byte characters of each width.
LONG_TEXTS = (
    "Customer review: ",
    "Café crème, naïve façade, Zürich; ",
    "東京の最高のレストランと居酒屋の完全ガイド、",
    "정말 긴 제품 리뷰입니다, 다시 살 거예요. ",
    "Great product 🎉🚀 would buy again 👍 ",
)
SCREENS = ("Home", "ProductDetail", "Cart", "Checkout", "Settings", "Onboarding 1/3", "Profil")
SECTIONS = ("shop", "account", "content", "support", "growth")
FEATURE_FLAGS = ("new_nav", "dark_mode", "one_click_checkout", "ai_search", "beta_editor")
# Non-BMP characters whose UTF-16 high halves are \ud83d and \ud83c.
EMOJI = ("😀", "🎉", "🚀", "👍")


def json_fragment(props: Props) -> bytes:
    """``,"k":v,...`` for ``props`` (non-ASCII raw, as Mixpanel sends it), or b"" if empty."""
    if not props:
        return b""
    return b"," + _ENCODER.encode(props)[1:-1].encode("utf-8")


def cut_text(text: str, limit: int = MAX_STRING_BYTES) -> str:
    """``text`` cut to at most ``limit`` UTF-8 bytes on a character boundary."""
    return text.encode("utf-8")[:limit].decode("utf-8", errors="ignore")


def invalid_utf8_value(rng: random.Random) -> bytes:
    """Raw bytes of a string value cut at 255 bytes inside a multi-byte character.

    The result is a JSON string body with no escapes and is NOT valid UTF-8.
    """
    char = _pick(rng, ("é", "日", "ж", "한", "😀"))
    width = len(char.encode("utf-8"))
    prefix = f"Review {_int(rng, 1, 100_000)}: "
    # Pad so the cut cannot land on a character boundary.
    while (MAX_STRING_BYTES - len(prefix)) % width == 0:
        prefix += " "
    return (prefix + char * (MAX_STRING_BYTES // width + 2)).encode("utf-8")[:MAX_STRING_BYTES]


def lone_surrogate_value(rng: random.Random) -> bytes:
    """A JSON string body ending in a lone high-surrogate escape such as ``\\ud83d``.

    What a JavaScript SDK sends when its UTF-16 cut splits an emoji: the
    prefix is raw UTF-8, then six ASCII bytes, with no low surrogate after them.
    Decoded with surrogates counted as 3 bytes, the value is at most 255 bytes.
    """
    emoji = _pick(rng, EMOJI)
    high = 0xD800 + ((ord(emoji) - 0x10000) >> 10)
    text = cut_text(_pick(rng, LONG_TEXTS) * 20, _int(rng, 40, MAX_STRING_BYTES - 3))
    return text.encode("utf-8") + b"\\u%04x" % high
