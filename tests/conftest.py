"""Test bench: fakes and real parts are pytest plugins, one module each, listed here."""

pytest_plugins = [
    "tests.parts.firestore",
    "tests.parts.pubsub",
    "tests.fakes.google",
    "tests.parts.directus",
    "tests.fakes.secretmanager",
    "tests.parts.product",
]
