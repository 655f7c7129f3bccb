"""Launchers for the real parts the tests run against (Firestore emulator, Directus 12)."""
