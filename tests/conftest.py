"""Test bench: fakes and real parts are pytest plugins, one module each, listed here."""

import logging
from collections.abc import Iterator

import pytest

pytest_plugins = [
    "tests.parts.firestore",
    "tests.parts.pubsub",
    "tests.fakes.google",
    "tests.parts.directus",
    "tests.fakes.secretmanager",
    "tests.parts.product",
]


@pytest.fixture(autouse=True)
def _logging_levels_kept() -> Iterator[None]:
    """``calsync.cli.main()`` configures the process's logging, as a command does (and quiets the settings
    warning): every test that runs it gives the others their levels back."""
    levels = {name: logging.getLogger(name).level for name in ("", "calsync", "calsync.settings")}
    yield
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)
