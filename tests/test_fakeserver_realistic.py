"""Tests of the fake server's realistic data profile (``Dataset(profile="realistic")``)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import statistics
import subprocess
import sys
from collections import Counter
from collections.abc import Iterable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mpexport.fakeserver import ODDITY_KINDS, Dataset, parse_line
from mpexport.fakeserver import realistic as realistic_package

DAY = dt.date(2024, 3, 5)
# 1600-2400 events a day: every oddity kind at least once, as in any 1000+ event day.
PER_DAY = 2000

# The SDK defaults the brief names; web and mobile events each carry their own subset.
DEFAULT_PROPERTIES = [
    "$device_id",
    "$user_id",
    "$browser",
    "$browser_version",
    "$os",
    "$os_version",
    "$screen_height",
    "$screen_width",
    "$current_url",
    "$referrer",
    "$referring_domain",
    "$initial_referrer",
    "$initial_referring_domain",
    "mp_lib",
    "$lib_version",
    "$city",
    "$region",
    "mp_country_code",
    "utm_source",
    "utm_medium",
    "utm_campaign",
    "utm_content",
    "utm_term",
    "$mp_api_endpoint",
    "$mp_api_timestamp_ms",
    "$device",
    "$manufacturer",
    "$model",
    "$carrier",
    "$wifi",
    "$app_version_string",
    "$app_build_number",
    "$timezone",
    "$language",
    "$search_engine",
    "mp_sent_by_lib_version",
    "$had_persisted_distinct_id",
    "$distinct_id_before_identity",
    "$session_id",
]
HEADER_KEYS = ("time", "distinct_id", "$insert_id", "mp_processing_time_ms")
LONE_SURROGATE = re.compile(rb'\\ud8[0-9a-f]{2}"')


def realistic(seed: int = 3, per_day: int = PER_DAY, **kwargs: Any) -> Dataset:
    return Dataset(seed=seed, events_per_day=per_day, profile="realistic", **kwargs)


def digest(lines: Iterable[bytes]) -> str:
    h = hashlib.sha256()
    for line in lines:
        h.update(line)
    return h.hexdigest()


def is_utf8(line: bytes) -> bool:
    try:
        line.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def depth(value: Any) -> int:
    """Nesting levels of lists and objects: 0 for a scalar, 1 for a flat list."""
    if isinstance(value, dict):
        return 1 + max((depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((depth(v) for v in value), default=0)
    return 0


def encoded_size(value: Any) -> int:
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return len(text.encode("utf-8", errors="surrogatepass"))


def oddities(line: bytes) -> set[str]:
    """The ``ODDITY_KINDS`` a line shows, judged from its bytes and parsed values."""
    props = parse_line(line)["properties"]
    found = set()
    if isinstance(props.get("distinct_id"), int):
        found.add("distinct_id_number")
    for key, kind in (
        ("distinct_id", "distinct_id_missing"),
        ("$insert_id", "no_insert_id"),
        ("mp_processing_time_ms", "no_processing_time"),
    ):
        if key not in props:
            found.add(kind)
    if b"\\u0000" in line and any(isinstance(v, str) and "\x00" in v for v in props.values()):
        found.add("nul_escape")
    if any(isinstance(v, int) and len(str(v)) == 30 for v in props.values()):
        found.add("huge_integer")
    if "" in props:
        found.add("empty_key")
    if any("." in key for key in props):
        found.add("dotted_key")
    if "\u2028".encode() in line:
        found.add("line_separator")
    if not is_utf8(line):
        found.add("invalid_utf8")
    if LONE_SURROGATE.search(line):
        found.add("lone_surrogate")
    if any(len(key.encode()) == 255 for key in props):
        found.add("long_key")
    return found


@pytest.fixture(scope="module")
def day_lines() -> list[bytes]:
    return realistic().lines_for_day(DAY)


# --- the small profile ------------------------------------------------------------------


def test_small_profile_is_byte_identical_to_before() -> None:
    # Digests computed with the code before the realistic profile existed.
    ds = Dataset(seed=1, events_per_day=300)
    assert digest(ds.lines_for_day(DAY)) == (
        "cd80ba6b9db74b1c0912b99a9fef5e9790e05dca2b4214558cf482628d6ca259"
    )
    assert digest(ds.lines_for_day(DAY, time_in_ms=True)) == (
        "6ef89489ebcffca4f69c68734beb9c4dc93a77a3aa05a3098594039498f0216f"
    )
    late = Dataset(seed=2, events_per_day=50, long_values=False)
    late.add_late_events(DAY, 7)
    assert digest(late.lines_for_day(DAY)) == (
        "e5354bfab558ebbd7fe0f2dfda629e665334966b378e27f88406db2c8c9bb3b5"
    )


def test_realistic_package_keeps_its_public_names() -> None:
    # The profile is split into modules; these stay importable from the package.
    names = set(realistic_package.__all__)
    assert names == {
        "BIG_EVENT",
        "MAX_COLLECTION_BYTES",
        "MAX_EVENT_BYTES",
        "MAX_STRING_BYTES",
        "ODDITY_KINDS",
        "RealisticDays",
    }
    assert all(hasattr(realistic_package, name) for name in names)
    assert realistic_package.ODDITY_KINDS is ODDITY_KINDS
    assert realistic_package.BIG_EVENT not in ODDITY_KINDS


def test_unknown_profile_is_refused() -> None:
    with pytest.raises(ValueError, match="profile"):
        Dataset(profile="huge")  # type: ignore[arg-type]


# --- determinism ------------------------------------------------------------------------


def test_deterministic_across_instances() -> None:
    a, b = realistic(seed=5, per_day=500), realistic(seed=5, per_day=500)
    for offset in range(3):
        day = DAY + dt.timedelta(days=offset)
        assert a.lines_for_day(day) == b.lines_for_day(day)
    assert realistic(seed=6, per_day=500).lines_for_day(DAY) != a.lines_for_day(DAY)
    assert a.lines_for_day(DAY) != a.lines_for_day(DAY + dt.timedelta(days=1))


def test_deterministic_across_processes() -> None:
    script = (
        "import datetime, hashlib\n"
        "from mpexport.fakeserver import Dataset\n"
        "ds = Dataset(seed=5, events_per_day=500, profile='realistic')\n"
        "print(hashlib.sha256(b''.join(ds.lines_for_day(datetime.date(2024, 3, 5)))).hexdigest())"
    )
    expected = hashlib.sha256(b"".join(realistic(seed=5, per_day=500).lines_for_day(DAY)))
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        out = subprocess.run(
            [sys.executable, "-c", script], env=env, capture_output=True, check=True, text=True
        )
        assert out.stdout.strip() == expected.hexdigest()


# --- shape of regular events ------------------------------------------------------------


def test_default_properties_and_size(day_lines: list[bytes]) -> None:
    parsed = [parse_line(line)["properties"] for line in day_lines]
    seen = Counter(key for props in parsed for key in props)
    missing = [key for key in DEFAULT_PROPERTIES if not seen[key]]
    assert not missing
    assert statistics.median(len(props) for props in parsed) >= 35
    assert 1024 <= statistics.median(len(line) for line in day_lines) <= 2048
    assert all(len(props) <= 255 for props in parsed)


def test_header_fields_of_regular_events(day_lines: list[bytes]) -> None:
    start = int(dt.datetime(2024, 3, 5, tzinfo=dt.UTC).timestamp())
    regular = [line for line in day_lines if not oddities(line)]
    assert len(regular) > 0.95 * len(day_lines)
    for line in regular:
        assert line.endswith(b"}}\n") and line.count(b"\n") == 1
        event = parse_line(line)
        props = event["properties"]
        assert list(props)[:4] == list(HEADER_KEYS)
        assert start <= props["time"] < start + 86_400
        assert props["mp_processing_time_ms"] >= props["$mp_api_timestamp_ms"]
        assert props["$mp_api_timestamp_ms"] >= props["time"] * 1000
        assert isinstance(props["distinct_id"], str) and props["distinct_id"]
        assert len(props["$insert_id"]) in (32, 36)
    times = [parse_line(line)["properties"]["time"] for line in regular]
    assert times != sorted(times)


def test_no_property_name_repeats_within_an_event(day_lines: list[bytes]) -> None:
    def unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [key for key, _ in pairs]
        assert len(keys) == len(set(keys)), keys
        return dict(pairs)

    for line in day_lines:
        json.loads(line.decode("utf-8", errors="replace"), object_pairs_hook=unique)


def test_strings_cut_at_255_bytes(day_lines: list[bytes]) -> None:
    longest = 0
    for line in day_lines:
        if not is_utf8(line):
            continue  # U+FFFD replacements make those values look longer than they were
        for key, value in parse_line(line)["properties"].items():
            assert len(key.encode()) <= 255
            if isinstance(value, str):
                size = len(value.encode("utf-8", errors="surrogatepass"))
                assert size <= 255
                longest = max(longest, size)
    # The cut really happens: some values are right at the limit.
    assert longest >= 250


def test_lists_and_objects_up_to_8_kb_and_3_deep(day_lines: list[bytes]) -> None:
    carrying = 0
    biggest = 0
    for line in day_lines:
        sizes = [
            encoded_size(value)
            for value in parse_line(line)["properties"].values()
            if isinstance(value, (list, dict))
        ]
        for value in parse_line(line)["properties"].values():
            if isinstance(value, (list, dict)):
                assert depth(value) <= 3
        assert all(size <= 8 * 1024 for size in sizes)
        if any(size > 1024 for size in sizes):
            carrying += 1
        biggest = max([biggest, *sizes])
    assert 0.01 * len(day_lines) <= carrying <= 0.08 * len(day_lines)
    assert biggest > 4 * 1024


# --- oddities ---------------------------------------------------------------------------


def test_every_oddity_kind_at_a_low_rate(day_lines: list[bytes]) -> None:
    counts = Counter(kind for line in day_lines for kind in oddities(line))
    assert set(counts) == set(ODDITY_KINDS)
    # One of each a 2000-event day, plus at most a duplicate or two of it.
    assert max(counts.values()) <= 4


@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 10**6), offset=st.integers(0, 3650))
def test_every_oddity_kind_on_any_day_of_1000_events(seed: int, offset: int) -> None:
    ds = realistic(seed=seed, per_day=1250)  # 1000-1500 events
    lines = ds.lines_for_day(DAY + dt.timedelta(days=offset))
    assert {kind for line in lines for kind in oddities(line)} == set(ODDITY_KINDS)
    for line in lines:
        event = parse_line(line)
        assert isinstance(event["event"], str) and isinstance(event["properties"], dict)


def test_invalid_utf8_lines_parse_leniently(day_lines: list[bytes]) -> None:
    bad = [line for line in day_lines if not is_utf8(line)]
    assert bad
    for line in bad:
        with pytest.raises(UnicodeDecodeError):
            line.decode("utf-8")
        props = parse_line(line)["properties"]
        # Only the cut value is damaged: its end became U+FFFD, the key fields are intact.
        assert props["review_text"].endswith("\ufffd")
        assert len(props["review_text"].encode()) <= 255 + 2
        assert isinstance(props["distinct_id"], str) and props["$insert_id"]
        match = re.search(rb'"review_text":"([^"]*)"', line)
        assert match is not None and len(match.group(1)) == 255


def test_lone_surrogate_escape(day_lines: list[bytes]) -> None:
    lines = [line for line in day_lines if LONE_SURROGATE.search(line)]
    assert lines
    for line in lines:
        assert re.search(rb'"review_text":"[^"\\]*\\ud83[cd]"', line)
        value = parse_line(line)["properties"]["review_text"]
        assert value[-1] in ("\ud83c", "\ud83d")
        with pytest.raises(UnicodeEncodeError):
            value.encode("utf-8")
        assert len(value.encode("utf-8", errors="surrogatepass")) <= 255


def test_other_oddities_by_value(day_lines: list[bytes]) -> None:
    props = [parse_line(line)["properties"] for line in day_lines]
    assert any(p.get("note") == "before\x00after" for p in props)
    assert any(isinstance(p.get("order_number"), int) and p["order_number"] >= 2**64 for p in props)
    assert any(p.get("") == "empty property name" for p in props)
    assert any(p.get("a.b") == "dotted" for p in props)
    assert any("\u2028" in p.get("comment", "") for p in props)


def test_duplicates_and_mixpanel_keys(day_lines: list[bytes]) -> None:
    assert max(Counter(day_lines).values()) >= 2, "exact duplicate lines"
    names_by_insert: dict[str, set[str]] = {}
    for line in day_lines:
        event = parse_line(line)
        props = event["properties"]
        # The dedupe key a loader computes exists for every line, oddities included.
        key = (event["event"], props.get("distinct_id"), props["time"], props.get("$insert_id"))
        assert isinstance(key[0], str) and isinstance(key[2], int)
        if "$insert_id" in props:
            names_by_insert.setdefault(props["$insert_id"], set()).add(event["event"])
    assert any(len(names) > 1 for names in names_by_insert.values())


def test_oddities_can_be_turned_off() -> None:
    lines = realistic(oddity_every=0).lines_for_day(DAY)
    assert not any(oddities(line) for line in lines)


def test_small_days_get_oddities_when_asked() -> None:
    lines = realistic(per_day=100, oddity_every=100).lines_for_day(DAY)
    assert {kind for line in lines for kind in oddities(line)} == set(ODDITY_KINDS)
    assert not any(oddities(line) for line in realistic(per_day=100).lines_for_day(DAY))


# --- the near-1 MB event ----------------------------------------------------------------


def test_big_event_is_legal_and_near_1_mb() -> None:
    ds = realistic(per_day=400, big_event_every=400, oddity_every=0)
    lines = ds.lines_for_day(DAY)
    big = [line for line in lines if len(line) > 100_000]
    assert big
    for line in big:
        assert 900_000 < len(line) < 1_000_000
        props = parse_line(line)["properties"]
        assert len(props) <= 255
        for value in props.values():
            if isinstance(value, (list, dict)):
                assert encoded_size(value) <= 8 * 1024 and depth(value) <= 3
    assert all(len(line) < 100_000 for line in realistic(per_day=400).lines_for_day(DAY))


# --- Dataset features with the realistic profile ----------------------------------------


def test_time_in_ms_changes_only_the_time() -> None:
    ds = realistic(per_day=1200, big_event_every=1200)
    seconds, millis = ds.lines_for_day(DAY), ds.lines_for_day(DAY, time_in_ms=True)
    assert len(seconds) == len(millis)
    for s_line, ms_line in zip(seconds, millis, strict=True):
        s_event, ms_event = parse_line(s_line), parse_line(ms_line)
        assert ms_event["properties"]["time"] // 1000 == s_event["properties"]["time"]
        ms_event["properties"]["time"] = s_event["properties"]["time"]
        assert ms_event == s_event


def test_quiet_days_and_late_events() -> None:
    a, b = realistic(per_day=300, quiet_every=2), realistic(per_day=300, quiet_every=2)
    quiet = DAY if a.is_quiet(DAY) else DAY + dt.timedelta(days=1)
    assert a.lines_for_day(quiet) == []
    loud = quiet + dt.timedelta(days=1)
    before = a.lines_for_day(loud)
    a.add_late_events(loud, 3)
    a.add_late_events(loud, 2)
    b.add_late_events(loud, 5)
    after = a.lines_for_day(loud)
    assert after[: len(before)] == before and len(after) == len(before) + 5
    assert after == b.lines_for_day(loud)
    for line in after[len(before) :]:
        props = parse_line(line)["properties"]
        # Processed three days after the event happened.
        assert props["mp_processing_time_ms"] - props["time"] * 1000 >= 3 * 86_400_000
    a.add_late_events(quiet, 2)
    assert len(a.lines_for_day(quiet)) == 2


def test_event_filter_where_and_limit() -> None:
    ds = realistic(per_day=600, oddity_every=200)
    end = DAY + dt.timedelta(days=2)
    everything = ds.lines_for_range(DAY, end)
    assert everything == [
        line for i in range(3) for line in ds.lines_for_day(DAY + dt.timedelta(days=i))
    ]
    picked = ds.lines_for_range(DAY, end, events=["Purchase", "Sign Up"])
    assert picked == [
        line for line in everything if parse_line(line)["event"] in ("Purchase", "Sign Up")
    ]
    web = ds.lines_for_range(DAY, end, where='properties["mp_lib"] == "web"')
    assert web == [
        line for line in everything if parse_line(line)["properties"].get("mp_lib") == "web"
    ]
    assert 0 < len(web) < len(everything)
    # Lines that are not valid UTF-8 go through the where filter too.
    anything = ds.lines_for_range(DAY, end, where='defined(properties["time"])')
    assert anything == everything and not all(is_utf8(line) for line in anything)
    assert ds.lines_for_range(DAY, end, limit=9) == everything[:9]


def test_warm_and_tiny_cache_give_the_same_lines() -> None:
    cached, uncached = realistic(per_day=300), realistic(per_day=300, cache_bytes=1)
    end = DAY + dt.timedelta(days=2)
    assert cached.warm(DAY, end) == len(cached.lines_for_range(DAY, end))
    assert uncached.lines_for_range(DAY, end) == cached.lines_for_range(DAY, end)


def test_parse_line_rejects_non_objects() -> None:
    with pytest.raises(ValueError):
        parse_line(b"[1, 2]\n")
