"""Everything about realistic events that does not vary per event, rendered once.

A Dataset's pools are JSON fragments (each ``,"k":v...``) that
``RealisticDays`` assembles lines from, so a line costs one bytes %-format
instead of a dict and ``json.dumps``.
"""

from __future__ import annotations

import random

from mpexport.fakeserver.events import EVENT_NAMES
from mpexport.fakeserver.realistic.properties import (
    account,
    app_context,
    app_device,
    bulk_value,
    campaign,
    collection,
    extra,
    geo,
    identity,
    web_context,
    web_device,
)
from mpexport.fakeserver.realistic.values import ENCODER, json_fragment
from mpexport.fakeserver.realistic.vocab import GEOS


class Pools:
    """Pre-rendered JSON fragments that events are assembled from.

    The draw order below is part of the output: reordering any line changes
    every realistic day's bytes.
    """

    def __init__(self, rng: random.Random, n_users: int) -> None:
        self.name_json = {name: ENCODER.encode(name).encode("utf-8") for name in EVENT_NAMES}
        # Pool sizes match the bit fields that index them in RealisticDays._regular.
        self.extras = {
            name: [json_fragment(extra(rng, name)) for _ in range(64)] for name in EVENT_NAMES
        }
        self.web_ctx = [json_fragment(web_context(rng)) for _ in range(1024)]
        self.app_ctx = [json_fragment(app_context(rng)) for _ in range(1024)]
        self.collections = [json_fragment(collection(rng)) for _ in range(64)]
        self.bulk = [bulk_value(rng) for _ in range(8)]
        web_devices = [json_fragment(web_device(rng)) for _ in range(128)]
        app_devices = [json_fragment(app_device(rng)) for _ in range(128)]
        geos = [json_fragment(geo(place)) for place in GEOS]
        campaigns = [json_fragment(campaign(rng)) for _ in range(128)]
        accounts = [json_fragment(account(rng)) for _ in range(256)]
        # Parallel per-user lists: the hot loop indexes them without attribute lookups.
        self.user_distinct: list[bytes] = []
        self.user_session: list[bytes] = []
        self.user_web: list[bool] = []
        self.user_frag: list[bytes] = []
        for u in range(n_users):
            web = rng.random() < 0.7
            distinct, ids = identity(rng, u, web)
            self.user_distinct.append(ENCODER.encode(distinct).encode("utf-8"))
            self.user_session.append(b"%010x" % rng.getrandbits(40))
            self.user_web.append(web)
            self.user_frag.append(
                json_fragment(ids)
                + (web_devices if web else app_devices)[int(rng.random() * 128)]
                + geos[int(rng.random() * len(geos))]
                + campaigns[int(rng.random() * len(campaigns))]
                + accounts[int(rng.random() * len(accounts))]
            )
