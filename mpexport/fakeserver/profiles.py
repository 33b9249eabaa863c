"""Deterministic user and group profiles: what the fake server's engage endpoint holds.

A profile is ``{"$distinct_id": ..., "$properties": {...}}``, as Mixpanel's
``/api/query/engage`` returns it. Profile ``n`` (numbered from 1) is a pure
function of (seed, n), identical across processes and instances, so a test
can compute what a server built with the same arguments serves.
"""

from __future__ import annotations

import datetime as dt
import random
import threading
from typing import Any

from mpexport.fakeserver.realistic.vocab import GEOS
from mpexport.fakeserver.where import compile_where

Profile = dict[str, Any]

PLANS = ("free", "pro", "enterprise")
# Non-ASCII names on purpose, like the cities: a consumer meets multi-byte
# UTF-8 in the first page.
_FIRST = ("Ana", "Björn", "Chloé", "Dmitri", "Émile", "Fatima", "Grace", "Hiroshi", "Ines", "Jōji")
_LAST = ("Müller", "Nakamura", "O'Brien", "Pérez", "Quinn", "Rossi", "Søndergaard", "Tanaka")
_TAGS = ("beta", "newsletter", "vip", "churn-risk", "mobile", "früh")
_INDUSTRIES = ("software", "retail", "finance", "health", "éducation")
_COMPANY_WORDS = ("Acme", "Globex", "Initech", "Umbrella", "Hooli", "Żabka", "Nordlicht")
# Profiles were last seen up to a year before this (a fixed instant keeps the
# data independent of the day a test runs).
_EPOCH = dt.datetime(2024, 6, 1, tzinfo=dt.UTC)
_YEAR_SECONDS = 365 * 86_400


def _stamp(seconds_before_epoch: int) -> str:
    """A UTC time in Mixpanel's profile format (no zone, no fraction)."""
    moment = _EPOCH - dt.timedelta(seconds=seconds_before_epoch)
    return moment.strftime("%Y-%m-%dT%H:%M:%S")


def _created_and_seen(rng: random.Random) -> tuple[str, str]:
    """``$created`` within three years, ``$last_seen`` after it and within a year."""
    created = rng.randrange(1, 3 * _YEAR_SECONDS)
    return _stamp(created), _stamp(rng.randrange(min(created, _YEAR_SECONDS)))


def _user(seed: int, n: int) -> Profile:
    rng = random.Random(f"profile:{seed}:{n}")
    first, last = rng.choice(_FIRST), rng.choice(_LAST)
    city, region, country, timezone, _language = rng.choice(GEOS)
    created, last_seen = _created_and_seen(rng)
    props: dict[str, Any] = {
        "$email": f"user{n}@example.com",
        "$name": f"{first} {last}",
        "$city": city,
        "$region": region,
        "$country_code": country,
        "$timezone": timezone,
        "$created": created,
        "$last_seen": last_seen,
        # Most accounts are free, as in a real product.
        "plan": rng.choices(PLANS, weights=(6, 3, 1))[0],
        "logins": rng.randrange(0, 500),
        "lifetime_value": round(rng.uniform(0, 2000), 2),
        "verified": rng.random() < 0.7,
        "tags": rng.sample(_TAGS, rng.randrange(0, 4)),
        "address": {"city": city, "country": country, "zip": f"{rng.randrange(100000):05d}"},
    }
    # Sparse properties, so that defined() and missing columns both matter.
    if rng.random() < 0.3:
        props["$phone"] = f"+1 555 {rng.randrange(1000):03d} {rng.randrange(10000):04d}"
    if n % 7 == 0:
        # An id that looks like a number (leading zeros included): a consumer
        # that guesses types turns it into one and loses the zeros.
        props["external_id"] = f"{rng.randrange(10**8):08d}"
    return {"$distinct_id": f"u-{n}", "$properties": props}


def _group(seed: int, group_key: str, n: int) -> Profile:
    rng = random.Random(f"group:{seed}:{group_key}:{n}")
    city, _region, country, _timezone, _language = rng.choice(GEOS)
    created, last_seen = _created_and_seen(rng)
    props: dict[str, Any] = {
        "$name": f"{rng.choice(_COMPANY_WORDS)} {n}",
        "$group_key": group_key,
        "$created": created,
        "$last_seen": last_seen,
        "industry": rng.choice(_INDUSTRIES),
        "employees": rng.randrange(1, 20_000),
        "plan": PLANS[rng.randrange(len(PLANS))],
        "headquarters": {"city": city, "country": country},
        "domains": [f"company{n}.example.com"],
    }
    return {"$distinct_id": f"company-{n}", "$properties": props}


def _shallow_copy(profile: Profile, keep: list[str] | None) -> Profile:
    # A new outer dict and property dict per call: a caller may edit what it
    # got without changing what the server serves next.
    props: dict[str, Any] = profile["$properties"]
    if keep is not None:
        props = {name: props[name] for name in keep if name in props}
    return {"$distinct_id": profile["$distinct_id"], "$properties": dict(props)}


class ProfileDataset:
    """The user profiles (``count``) and group profiles (``groups``) of a fake project.

    Users are ``u-1`` .. ``u-<count>``, groups ``company-1`` .. ``company-<groups>``
    for any group key (their properties depend on the key). Lists are built on
    first use and kept; every method returns them in the same, numbered order.
    """

    def __init__(self, seed: int = 1, count: int = 2500, groups: int = 0) -> None:
        if count < 0 or groups < 0:
            raise ValueError("count and groups must be >= 0")
        self.seed = seed
        self.count = count
        self.groups = groups
        self._lock = threading.Lock()
        self._users: list[Profile] | None = None
        self._groups: dict[str, list[Profile]] = {}

    def _all_users(self) -> list[Profile]:
        with self._lock:
            if self._users is None:
                self._users = [_user(self.seed, n) for n in range(1, self.count + 1)]
            return self._users

    def _all_groups(self, group_key: str) -> list[Profile]:
        with self._lock:
            if group_key not in self._groups:
                self._groups[group_key] = [
                    _group(self.seed, group_key, n) for n in range(1, self.groups + 1)
                ]
            return self._groups[group_key]

    def users(self) -> list[Profile]:
        """Every user profile, ``u-1`` first."""
        return [_shallow_copy(p, None) for p in self._all_users()]

    def group_profiles(self, group_key: str) -> list[Profile]:
        """Every group profile of ``group_key``, ``company-1`` first."""
        return [_shallow_copy(p, None) for p in self._all_groups(group_key)]

    def select(
        self,
        where: str | None = None,
        cohort_id: int | None = None,
        group_key: str | None = None,
        output_properties: list[str] | None = None,
    ) -> list[Profile]:
        """The profiles an engage query answers, in order.

        ``where`` is matched against ``$properties`` (``where.compile_where``;
        raises ``WhereError`` when unsupported). Cohort ``N`` holds the
        profiles whose number is a multiple of N. ``group_key`` selects that
        key's group profiles instead of users. ``output_properties`` keeps
        only those property names (an empty list keeps none).
        """
        if cohort_id is not None and cohort_id <= 0:
            raise ValueError(f"cohort id must be positive, got {cohort_id}")
        predicate = compile_where(where) if where is not None else None
        pool = self._all_groups(group_key) if group_key is not None else self._all_users()
        chosen: list[Profile] = []
        for number, profile in enumerate(pool, start=1):
            if cohort_id is not None and number % cohort_id != 0:
                continue
            if predicate is not None and not predicate(profile["$properties"]):
                continue
            chosen.append(_shallow_copy(profile, output_properties))
        return chosen
