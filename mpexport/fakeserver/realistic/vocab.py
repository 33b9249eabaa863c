"""What Mixpanel SDKs and their users send: the realistic profile's vocabularies.

Plain data, no logic. Values are non-ASCII where real data is (cities,
titles, carriers), so every consumer meets multi-byte UTF-8 early.
"""

from __future__ import annotations

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
ACCOUNT_PLANS = ("free", "pro", "enterprise", "trial")
COLORS = ("black", "white", "rouge", "緑")
SIZES = ("S", "M", "L", "XL")
