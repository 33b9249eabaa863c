"""Single values of the realistic profile: fast picks, the 255-byte cut, JSON fragments.

Includes the two string values that are not clean UTF-8 JSON: a value cut
inside a multi-byte character, and one ending in a lone surrogate escape.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from typing import Any, TypeVar

from mpexport.fakeserver.events import Props
from mpexport.fakeserver.realistic.vocab import EMOJI, LONG_TEXTS

T = TypeVar("T")

MAX_STRING_BYTES = 255
# ensure_ascii=False writes non-ASCII raw, as Mixpanel sends it.
ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def pick(rng: random.Random, seq: Sequence[T]) -> T:
    """One item of ``seq``; one ``rng.random()`` draw, cheaper than ``rng.choice``."""
    return seq[int(rng.random() * len(seq))]


def rand_int(rng: random.Random, low: int, high: int) -> int:
    """An int in [low, high) from one ``rng.random()`` draw, cheaper than ``randrange``."""
    return low + int(rng.random() * (high - low))


def encoded_size(value: Any) -> int:
    """The size in bytes of ``value`` as compact UTF-8 JSON."""
    return len(ENCODER.encode(value).encode("utf-8"))


def json_fragment(props: Props) -> bytes:
    """``,"k":v,...`` for ``props`` (non-ASCII raw, as Mixpanel sends it), or b"" if empty."""
    if not props:
        return b""
    return b"," + ENCODER.encode(props)[1:-1].encode("utf-8")


def cut_text(text: str, limit: int = MAX_STRING_BYTES) -> str:
    """``text`` cut to at most ``limit`` UTF-8 bytes on a character boundary."""
    return text.encode("utf-8")[:limit].decode("utf-8", errors="ignore")


def invalid_utf8_value(rng: random.Random) -> bytes:
    """Raw bytes of a string value cut at 255 bytes inside a multi-byte character.

    The result is a JSON string body with no escapes and is NOT valid UTF-8.
    """
    char = pick(rng, ("é", "日", "ж", "한", "😀"))
    width = len(char.encode("utf-8"))
    prefix = f"Review {rand_int(rng, 1, 100_000)}: "
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
    emoji = pick(rng, EMOJI)
    high = 0xD800 + ((ord(emoji) - 0x10000) >> 10)
    text = cut_text(pick(rng, LONG_TEXTS) * 20, rand_int(rng, 40, MAX_STRING_BYTES - 3))
    return text.encode("utf-8") + b"\\u%04x" % high
