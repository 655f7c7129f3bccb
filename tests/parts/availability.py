"""The rule for real parts: under CI=true a missing part fails loudly; on a laptop it skips with the reason."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def part_unavailable(part: str, reason: str) -> NoReturn:
    """Fail (CI) or skip (laptop) the current test because ``part`` cannot run here."""
    message = f"{part} is not available: {reason}"
    if in_ci():
        pytest.fail(message + " (CI=true: real parts may not be skipped)", pytrace=False)
    pytest.skip(message)
