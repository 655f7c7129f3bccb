"""Pure helpers of the Directus client: how bulk writes and lookups are split into requests."""

from __future__ import annotations

import json

from calsync.directus.limits import IN_CHARS, IN_CHUNK, body_chunks, in_chunks


def test_body_chunks_keep_order_and_stay_within_the_limit() -> None:
    items = [{"n": n, "text": "z" * (n * 10)} for n in range(40)]
    parts = list(body_chunks(items, limit=2000))
    assert [item for part in parts for item in part] == items
    assert all(len(json.dumps(part)) <= 2000 for part in parts if len(part) > 1)
    assert len(parts) > 1
    huge = [{"text": "z" * 5000}]
    assert list(body_chunks(huge, limit=2000)) == [huge]  # alone, for Directus to refuse on its own


def test_in_chunks_bound_both_the_count_and_the_characters() -> None:
    short = [str(n) for n in range(450)]
    assert [len(part) for part in in_chunks(short)] == [IN_CHUNK, IN_CHUNK, 50]
    long = ["v" * 1024 for _ in range(13)]
    parts = list(in_chunks(long))
    assert [value for part in parts for value in part] == long
    assert all(sum(map(len, part)) <= IN_CHARS for part in parts) and len(parts) == 3
