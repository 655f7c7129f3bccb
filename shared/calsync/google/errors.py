"""What can go wrong talking to Google Calendar: one small hierarchy, shared by the client and the in-memory
port. Messages carry Google's reason and message, never a token."""

from __future__ import annotations

import json

_RATE_LIMIT_REASONS = frozenset({"rateLimitExceeded", "userRateLimitExceeded"})
_QUOTA_REASONS = frozenset({"quotaExceeded", "dailyLimitExceeded"})
_SCOPE_REASONS = frozenset({"insufficientPermissions", "ACCESS_TOKEN_SCOPE_INSUFFICIENT"})
REVOKED_GRANTS = frozenset({"invalid_grant", "unauthorized_client", "invalid_client"})


class GoogleError(Exception):
    """A Calendar call failed. ``status`` is the HTTP status (0 when none arrived), ``reason`` Google's."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


class GoogleRetryableError(GoogleError):
    """429, 5xx, 403 rate limits, connection failures: still failing after the retries and budget."""


class GoogleNotFound(GoogleError):
    """404: no such event (or calendar)."""


class GoogleGone(GoogleError):
    """410: the event was already deleted, or the sync token expired (``full_sync_required``)."""

    @property
    def full_sync_required(self) -> bool:
        return self.reason == "fullSyncRequired"


class GoogleConflict(GoogleError):
    """409: an event with this id exists (maybe cancelled)."""


class GoogleAccessRevoked(GoogleError):
    """The refresh token is revoked or expired (invalid_grant), or access is refused after a refresh:
    only a new consent helps."""


class GoogleQuotaExceeded(GoogleError):
    """403 quotaExceeded / dailyLimitExceeded: lasts hours; not retried here."""


class GoogleBadRequest(GoogleError):
    """400 and any other 4xx: Google refuses this request as it is."""


def error_details(content: bytes | str | None) -> tuple[str, str]:
    """(reason, message) from Google's error body."""
    if isinstance(content, bytes):
        content = content.decode("utf-8", "replace")
    try:
        data = json.loads(content or "")
    except ValueError:
        return "", ""
    if isinstance(data, list) and data:
        data = data[0]
    error = data.get("error") if isinstance(data, dict) else None
    if not isinstance(error, dict):
        return (str(error), "") if isinstance(error, str) else ("", "")
    message = str(error.get("message") or "")
    errors = error.get("errors")
    if isinstance(errors, list) and errors and isinstance(errors[0], dict):
        return str(errors[0].get("reason") or ""), message or str(errors[0].get("message") or "")
    details = error.get("details")
    if isinstance(details, list):
        for detail in details:
            if isinstance(detail, dict) and detail.get("reason"):
                return str(detail["reason"]), message
    return str(error.get("status") or ""), message


def error_from_status(status: int, reason: str, message: str, call: str = "request") -> GoogleError:
    """The GoogleError for an HTTP status and Google's reason."""
    text = f"Google Calendar {call} failed: {status} {reason or 'error'}" + (
        f" ({message})" if message else ""
    )
    if status == 429 or status >= 500:
        return GoogleRetryableError(status, reason, text)
    if status == 403 and reason in _RATE_LIMIT_REASONS:
        return GoogleRetryableError(status, reason, text)
    if status == 403 and reason in _QUOTA_REASONS:
        return GoogleQuotaExceeded(status, reason, text)
    if status == 401 or (status == 403 and reason in _SCOPE_REASONS):
        return GoogleAccessRevoked(status, reason or "authError", text)
    if status == 404:
        return GoogleNotFound(status, reason, text)
    if status == 409:
        return GoogleConflict(status, reason, text)
    if status == 410:
        return GoogleGone(status, reason, text)
    return GoogleBadRequest(status, reason, text)
