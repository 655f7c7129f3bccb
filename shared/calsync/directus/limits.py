"""Directus's request limits, and the splitting that keeps every request inside them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

# An _in filter carries at most IN_CHUNK values and IN_CHARS characters of them: Node refuses request heads
# over 16 KB, and Google event ids may be up to 1,024 characters long.
IN_CHUNK = 200
IN_CHARS = 6000
# Directus refuses a request body over MAX_PAYLOAD_SIZE (1 MB by default: 400 INVALID_PAYLOAD "request entity
# too large"; a proxy in front may say 413): bulk writes are split into bodies of at most this size.
BODY_LIMIT = 512 * 1024


def body_chunks(items: list[dict[str, Any]], limit: int = BODY_LIMIT) -> Iterator[list[dict[str, Any]]]:
    """``items`` in order, split so that each part's JSON stays within ``limit`` bytes (an item larger than
    that alone goes alone: Directus then refuses it, and only it)."""
    part: list[dict[str, Any]] = []
    size = 2  # the brackets
    for item in items:
        length = len(json.dumps(item).encode()) + 2  # and ", "
        if part and size + length > limit:
            yield part
            part, size = [], 2
        part.append(item)
        size += length
    if part:
        yield part


def in_chunks(values: list[str]) -> Iterator[list[str]]:
    part: list[str] = []
    chars = 0
    for value in values:
        if part and (len(part) == IN_CHUNK or chars + len(value) > IN_CHARS):
            yield part
            part, chars = [], 0
        part.append(value)
        chars += len(value)
    if part:
        yield part
