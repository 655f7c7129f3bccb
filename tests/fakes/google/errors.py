"""Google-shaped error replies: Calendar API errors and OAuth errors, and the reply type every handler returns."""

from __future__ import annotations

import json
from typing import Any

Headers = dict[str, str]
Reply = tuple[int, Headers, bytes]


class ApiError(Exception):
    """A Calendar API error in Google's shape."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message


def _error_reply(status: int, reason: str, message: str) -> Reply:
    body = {
        "error": {
            "errors": [{"domain": "global", "reason": reason, "message": message}],
            "code": status,
            "message": message,
        }
    }
    return _json_reply(status, body)


def _json_reply(status: int, body: Any, headers: Headers | None = None) -> Reply:
    return (
        status,
        {"Content-Type": "application/json; charset=UTF-8", **(headers or {})},
        json.dumps(body).encode(),
    )


def _oauth_error(status: int, error: str, description: str | None = None) -> Reply:
    body = {"error": error}
    if description:
        body["error_description"] = description
    return _json_reply(status, body)


_MESSAGES = {
    "rateLimitExceeded": "Rate Limit Exceeded",
    "userRateLimitExceeded": "User Rate Limit Exceeded",
    "quotaExceeded": "Calendar usage limits exceeded.",
    "dailyLimitExceeded": "Daily Limit Exceeded",
    "backendError": "Backend Error",
    "notFound": "Not Found",
    "duplicate": "The requested identifier already exists.",
    "deleted": "Resource has been deleted",
    "conditionNotMet": "Precondition Failed",
    "fullSyncRequired": "Sync token is no longer valid, a full sync is required.",
    "authError": "Invalid Credentials",
    "forbidden": "Forbidden",
    "invalid": "Invalid Value",
}
