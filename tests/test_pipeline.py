"""The worker pool with a scripted fetch: ordering, splits and the spool bound."""

from __future__ import annotations

import datetime as dt
import io
import os
import tempfile
import threading
from pathlib import Path
from typing import Any

import pytest

import mpexport.pipeline as pipeline
from mpexport.mixpanel.fetch import ChunkSplit
from mpexport.model import Chunk, CompletedChunk
from mpexport.sinks.ndjson import NdjsonSink

START = dt.date(2024, 1, 1)


def line_for(day: dt.date) -> bytes:
    return b'{"event":"e","properties":{"day":"' + day.isoformat().encode() + b'"}}\n'


def test_a_split_head_chunk_does_not_stall_stdout(monkeypatch: pytest.MonkeyPatch) -> None:
    # The first chunk (14 days) asks to be split only once the other workers
    # have raced ahead through the one-day chunks after it and filled every
    # spool slot left (they wait for it on stdout). Its halves must not need
    # slots the waiting chunks hold.
    workers = 4
    waiting = workers + pipeline.SPOOL_QUEUE - 1  # every slot but the head's
    lock = threading.Lock()
    fetched_ahead: list[Chunk] = []
    spool_full = threading.Event()

    def fetch(_session: Any, _query: Any, chunk: Chunk, spool_dir: Path, *_: Any
              ) -> CompletedChunk | ChunkSplit:
        if chunk.days > 1 and chunk.from_date == START:
            assert spool_full.wait(60), f"only {len(fetched_ahead)} chunks fetched ahead"
            return ChunkSplit(chunk, "terminated early")
        fd, name = tempfile.mkstemp(dir=spool_dir)
        data = b"".join(line_for(chunk.from_date + dt.timedelta(days=i))
                        for i in range(chunk.days))
        os.write(fd, data)
        os.close(fd)
        if chunk.from_date > START + dt.timedelta(days=13):
            with lock:
                fetched_ahead.append(chunk)
                if len(fetched_ahead) == waiting:
                    spool_full.set()
        return CompletedChunk(chunk, Path(name), chunk.days, len(data), "", 1, 0.0)

    monkeypatch.setattr(pipeline, "fetch_chunk", fetch)
    chunks = [Chunk(0, START, START + dt.timedelta(days=13))]
    day = START + dt.timedelta(days=14)
    for index in range(1, 40):
        chunks.append(Chunk(index, day, day))
        day += dt.timedelta(days=1)
    out = io.BytesIO()
    run = pipeline.Pipeline(chunks, None, NdjsonSink(out, START), workers=workers)  # type: ignore[arg-type]
    results: list[Any] = []
    worker = threading.Thread(target=lambda: results.append(run.run()), daemon=True)
    worker.start()
    worker.join(120)  # a guard against a hang: a stalled pipeline never ends
    assert not worker.is_alive(), "the pipeline stalled"
    assert spool_full.is_set()
    assert results[0].ok
    expected = b"".join(line_for(START + dt.timedelta(days=i)) for i in range(14 + 39))
    assert out.getvalue() == expected  # every day once, in date order
