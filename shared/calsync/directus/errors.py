"""What can go wrong talking to Directus: one small hierarchy, shared by the client and the in-memory port."""

from __future__ import annotations

from calsync import logs


class DirectusError(Exception):
    """Directus refused or failed a request."""

    def __init__(self, message: str, status: int | None = None, code: str | None = None) -> None:
        super().__init__(logs.scrub(message))
        self.status = status
        self.code = code


class DirectusUnavailable(DirectusError):
    """Unreachable, 5xx or 429 even after retries: try again later."""


class DirectusAuthError(DirectusError):
    """The token is wrong (401), or lacks permission on the collection (403; Directus also says this when
    the collection does not exist)."""


class DirectusNotFound(DirectusError):
    """The item does not exist (403 on a single-item route) or the route does not (404)."""


class DirectusValidationError(DirectusError):
    """Directus rejected the data (400), e.g. RECORD_NOT_UNIQUE, a failed validation or a body too large (400
    from Directus itself, 413 from a proxy in front of it)."""
