"""``mpexport demo``: the main job against the built-in server, self-checking."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mpexport.api import build_request, run_export
from mpexport.credentials import Credentials
from mpexport.dates import utc_today
from mpexport.fetch import FetchSettings

# Every kind of truncation and failure the real API is known for, each on the
# first attempt of some chunk: the demo shows that none of it leaks through.
DEMO_FAULTS = (
    "reset",
    "gzip_cut",
    "terminated_early_line",
    "http503",
    "export_terminated_early_line",
    "terminated_early_inline",
    "http429",
)


def run_demo(
    *,
    days: int,
    events_per_day: int,
    output: str,
    progress: bool | None,
    run: Callable[[Any, bool | None], Any],
    echo: Callable[[str], None],
) -> int:
    """Serve, export, verify; return the exit code."""
    from mpexport.fakeserver import (
        DEMO_PROJECT_ID,
        DEMO_SECRET,
        DEMO_USERNAME,
        Dataset,
        FakeMixpanelServer,
        ServerConfig,
    )

    today = utc_today()
    start = today - dt.timedelta(days=days)
    end = today - dt.timedelta(days=1)
    dataset = Dataset(seed=2024, events_per_day=events_per_day, quiet_every=17)
    config = ServerConfig(dataset=dataset, faults=DEMO_FAULTS, ttfb=0.05)
    credentials = Credentials(username=DEMO_USERNAME, secret=DEMO_SECRET,
                              project_id=DEMO_PROJECT_ID)
    with FakeMixpanelServer(config) as server:
        echo(f"demo: built-in Mixpanel-compatible server at {server.url}, "
             f"faults on first attempts: {', '.join(DEMO_FAULTS)}")
        request = build_request(
            start, end, api_url=server.url, chunk_days=3,
            settings=FetchSettings(backoff_base=0.2, backoff_cap=2.0),
        )
        echo(f"demo: exporting {start}..{end} in {len(request.plan())} chunks "
             f"with {request.workers} workers to {output}")
        path = Path(output)
        with path.open("wb") as stream:
            result = run(
                lambda callback: run_export(request, credentials, stream, progress=callback),
                progress,
            )
        expected = Counter(dataset.lines_for_range(start, end))
    with path.open("rb") as stream:
        got = Counter(stream)
    retries = sum(c.attempts - 1 for c in result.completed)
    echo(f"demo: {result.events} events, {len(result.completed)}/{result.chunks_total} chunks, "
         f"{retries} retried attempts, {result.bytes / 1e6:.1f} MB in {result.seconds:.1f}s")
    if got == expected and result.ok:
        echo(f"demo: OK: {output} holds exactly the server's {sum(expected.values())} "
             "events, each once; try: head -3 " + output)
        return 0
    echo(f"demo: MISMATCH: {sum(got.values())} lines written, "
         f"{sum(expected.values())} expected")
    return 1
