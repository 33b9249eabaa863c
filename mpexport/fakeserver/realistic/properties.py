"""Property sets of the realistic profile, each drawn from a seeded RNG.

Every function is a pure function of the ``random.Random`` handed in (and
its other arguments); ``Pools`` calls them in a fixed order, so any change
to a draw here changes every realistic day's bytes.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from mpexport.fakeserver.events import PRODUCTS, SEARCH_TERMS, Props, event_properties
from mpexport.fakeserver.realistic.values import (
    ENCODER,
    cut_text,
    encoded_size,
    pick,
    rand_int,
)
from mpexport.fakeserver.realistic.vocab import (
    ACCOUNT_PLANS,
    APP_PLATFORMS,
    APP_VERSIONS,
    CARRIERS,
    COLORS,
    FEATURE_FLAGS,
    HOSTS,
    LONG_TEXTS,
    PATHS,
    REFERRERS,
    SCREENS,
    SECTIONS,
    SIZES,
    TITLES,
    UTM_SOURCES,
    UTM_TERMS,
    WEB_LIB_VERSIONS,
    WEB_PLATFORMS,
)

# Mixpanel's limit for one list or object value.
MAX_COLLECTION_BYTES = 8 * 1024


def _uuid(rng: random.Random) -> str:
    x = f"{rng.getrandbits(128):032X}"
    return f"{x[:8]}-{x[8:12]}-{x[12:16]}-{x[16:20]}-{x[20:]}"


def identity(rng: random.Random, u: int, web: bool) -> tuple[str, Props]:
    """User ``u``'s distinct_id and identity properties (web or mobile device id)."""
    if web:
        # The JS SDK's device id: time, random, user-agent hash, screen, time.
        stamp = f"{0x18C000000000 + rng.getrandbits(36):x}"
        device_id = f"{stamp}-{rng.getrandbits(56):014x}-26001b51-1fa400-{stamp}"
    else:
        device_id = _uuid(rng)
    props: Props = {"$device_id": device_id}
    if rng.random() < 0.8:
        style = int(rng.random() * 4)
        user_id = (f"u-{u}", str(1_000_000 + 7 * u), f"user{u}@example.com", _uuid(rng).lower())[
            style
        ]
        props["$user_id"] = user_id
        props["$distinct_id_before_identity"] = "$device:" + device_id
        distinct = user_id
    else:
        distinct = "$device:" + device_id
    props["$had_persisted_distinct_id"] = rng.random() < 0.6
    return distinct, props


def web_device(rng: random.Random) -> Props:
    """What the JavaScript SDK reports about the browser, OS and screen."""
    browser, versions, os_name, os_versions, device, screens = pick(rng, WEB_PLATFORMS)
    width, height = pick(rng, screens)
    lib = pick(rng, WEB_LIB_VERSIONS)
    props: Props = {
        "$mp_api_endpoint": "api-js.mixpanel.com",
        "mp_lib": "web",
        "$lib_version": lib,
        "mp_sent_by_lib_version": lib,
        "$browser": browser,
        "$browser_version": pick(rng, versions),
        "$os": os_name,
        "$os_version": pick(rng, os_versions),
        "$screen_height": height,
        "$screen_width": width,
    }
    if device:
        props["$device"] = device
    return props


def app_device(rng: random.Random) -> Props:
    """What a mobile SDK reports about the app, device and network."""
    lib, lib_version, os_name, os_versions, maker, models, (width, height) = pick(
        rng, APP_PLATFORMS
    )
    model, device = pick(rng, models)
    app_version, build = pick(rng, APP_VERSIONS)
    return {
        "$mp_api_endpoint": "api.mixpanel.com",
        "mp_lib": lib,
        "$lib_version": lib_version,
        "$os": os_name,
        "$os_version": pick(rng, os_versions),
        "$manufacturer": maker,
        "$model": model,
        "$device": device,
        "$carrier": pick(rng, CARRIERS),
        "$wifi": rng.random() < 0.6,
        "$app_version_string": app_version,
        "$app_build_number": build,
        "$screen_height": height,
        "$screen_width": width,
    }


def geo(place: tuple[str, str, str, str, str]) -> Props:
    """The geolocation properties Mixpanel adds for one entry of ``GEOS``."""
    city, region, country, timezone, language = place
    return {
        "$city": city,
        "$region": region,
        "mp_country_code": country,
        "$timezone": timezone,
        "$language": language,
    }


def campaign(rng: random.Random) -> Props:
    """Initial referrer and, for most users, UTM parameters."""
    roll = rng.random()
    if roll < 0.4:
        return {"$initial_referrer": "$direct", "$initial_referring_domain": "$direct"}
    referrer, domain, _ = pick(rng, REFERRERS)
    props: Props = {"$initial_referrer": referrer, "$initial_referring_domain": domain}
    if roll < 0.8:
        source, medium, campaigns = pick(rng, UTM_SOURCES)
        props.update(
            utm_source=source,
            utm_medium=medium,
            utm_campaign=pick(rng, campaigns),
            utm_content=f"variant_{rand_int(rng, 1, 9)}",
        )
        term = pick(rng, UTM_TERMS)
        if term:
            props["utm_term"] = term
    return props


def account(rng: random.Random) -> Props:
    """Super properties an app registers for its signed-in account."""
    return {
        "account_plan": pick(rng, ACCOUNT_PLANS),
        "account_id": f"acc_{rng.getrandbits(32):08x}",
        "ab_group": pick(rng, ("A", "B", "control")),
        "signup_source": pick(rng, ("organic", "paid", "referral", "sales")),
        "is_employee": rng.random() < 0.02,
        "company_size": pick(rng, (1, 10, 50, 250, 1000, 10_000)),
        "feature_flags": sorted(rng.sample(FEATURE_FLAGS, rand_int(rng, 0, 4))),
        "user_tier": pick(rng, ("bronze", "silver", "gold", "platinum")),
    }


def web_context(rng: random.Random) -> Props:
    """The page an event happened on: URL, referrer and title."""
    host = pick(rng, HOSTS)
    url = host + pick(rng, PATHS)
    roll = rng.random()
    if roll < 0.05:
        # Tracking parameters push some URLs past the cut; ASCII, so it stays valid.
        url = cut_text(f"{url}?utm_source=x&fbclid=IwAR{rng.getrandbits(1200):0300x}")
    elif roll < 0.3:
        url += f"?ref=nav&id={rand_int(rng, 1, 100_000)}"
    props: Props = {"$current_url": url}
    roll = rng.random()
    if roll < 0.5:
        props["$referrer"] = pick(rng, HOSTS) + pick(rng, PATHS)
        props["$referring_domain"] = host.removeprefix("https://")
    elif roll < 0.8:
        referrer, domain, engine = pick(rng, REFERRERS)
        props["$referrer"] = referrer
        props["$referring_domain"] = domain
        if engine:
            props["$search_engine"] = engine
    # A few titles hit the 255-byte cut, on a character boundary.
    title = cut_text(pick(rng, LONG_TEXTS) * 20) if rng.random() < 0.05 else pick(rng, TITLES)
    props["page_title"] = title
    props["app_section"] = pick(rng, SECTIONS)
    return props


def app_context(rng: random.Random) -> Props:
    """The screen an event happened on."""
    return {
        "screen_name": pick(rng, SCREENS),
        "previous_screen": pick(rng, SCREENS),
        "app_section": pick(rng, SECTIONS),
    }


def extra(rng: random.Random, name: str) -> Props:
    """The properties particular to an event named ``name``."""
    props = event_properties(rng, name)
    props["duration_ms"] = rand_int(rng, 0, 30_000)
    return props


def _cart_item(rng: random.Random) -> Any:
    return {
        "sku": f"SKU-{rand_int(rng, 0, 100_000)}",
        "name": pick(rng, PRODUCTS),
        "price": round(rng.uniform(0.5, 500.0), 2),
        "quantity": rand_int(rng, 1, 5),
        "options": {"color": pick(rng, COLORS), "size": pick(rng, SIZES)},
    }


def _form_field(rng: random.Random) -> Any:
    return (f"field_{rng.getrandbits(32):08x}", {"valid": rng.random() < 0.9, "length": 12})


# (property name, one item, the value from the items); values nest at most 3 deep.
_SHAPES: tuple[tuple[str, Callable[[random.Random], Any], Callable[[list[Any]], Any]], ...] = (
    ("cart_items", _cart_item, list),
    ("viewed_product_ids", lambda rng: rand_int(rng, 1, 10**7), list),
    ("recent_searches", lambda rng: pick(rng, SEARCH_TERMS + PRODUCTS), list),
    ("form_state", _form_field, lambda items: {"step": 2, "fields": dict(items)}),
    (
        "search_filters",
        lambda rng: pick(rng, PRODUCTS),
        lambda items: {"brands": items, "price": {"min": 0, "max": 500}},
    ),
)


def collection(rng: random.Random) -> Props:
    """One list or object property of 256 bytes to 8 KB (its JSON value's size)."""
    key, make_item, wrap = pick(rng, _SHAPES)
    target = rand_int(rng, 256, MAX_COLLECTION_BYTES + 1)
    items: list[Any] = []
    size = 64  # room for the wrapper around the items
    while True:
        item = make_item(rng)
        size += encoded_size(item) + 1
        if size > target:
            break
        items.append(item)
    while encoded_size(wrap(items)) > MAX_COLLECTION_BYTES:
        items.pop()
    return {key: wrap(items)}


def bulk_value(rng: random.Random) -> bytes:
    """A JSON list of ~8 KB (the per-value limit): a near-1 MB event is ~120 of them."""
    lines = [
        f"{i:03d} INFO worker={rand_int(rng, 1, 64)} {rng.getrandbits(704):0176x}"
        for i in range(40)
    ]
    value = ENCODER.encode(lines).encode("utf-8")
    assert len(value) <= MAX_COLLECTION_BYTES
    return value
