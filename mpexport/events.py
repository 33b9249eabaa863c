"""Progress events the pipeline reports, on the main thread, as a run goes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from mpexport.model import Chunk, ChunkFailure, CompletedChunk


@dataclass(frozen=True)
class PlanReady:
    """The plan is known: ``total`` chunks, of which ``skipped`` need no fetch."""

    chunks: tuple[Chunk, ...]
    skipped: tuple[Chunk, ...]


@dataclass(frozen=True)
class BytesReceived:
    """``count`` more bytes arrived from the network (compressed size)."""

    count: int


@dataclass(frozen=True)
class ChunkRetry:
    """An attempt failed; the chunk is tried again after ``delay`` seconds."""

    chunk: Chunk
    attempt: int
    reason: str
    delay: float


@dataclass(frozen=True)
class ChunkDone:
    """A chunk arrived whole and was handed to the sink."""

    completed: CompletedChunk


@dataclass(frozen=True)
class ChunkFailed:
    """A chunk failed after its whole retry budget."""

    failure: ChunkFailure


@dataclass(frozen=True)
class ChunkSplitInTwo:
    """A chunk kept failing in size-related ways; its two halves are fetched instead."""

    chunk: Chunk
    halves: tuple[Chunk, Chunk]
    reason: str


@dataclass(frozen=True)
class WaitingForBudget:
    """Request starts wait ``seconds`` for a rate limit (``reason`` says which).

    A wait for the hourly budget also says why the budget is spent, since
    earlier runs of the project (or runs at the same time) may have spent
    it: ``used`` starts of the ``limit`` per hour are in the last hour,
    ``by_others`` of them by other runs, and the wait ends at ``until``
    (wall-clock seconds since the epoch).
    """

    seconds: float
    reason: str
    used: int | None = None
    limit: int | None = None
    by_others: int | None = None
    until: float | None = None


@dataclass(frozen=True)
class Notice:
    """Something the user should know about how the options were read (before the plan)."""

    text: str


ProgressEvent = (
    Notice
    | PlanReady
    | BytesReceived
    | ChunkRetry
    | ChunkDone
    | ChunkFailed
    | ChunkSplitInTwo
    | WaitingForBudget
)
ProgressCallback = Callable[[ProgressEvent], None]
