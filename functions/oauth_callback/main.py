"""Cloud Function: an admin connects a Google account (/start, /callback, /status, /disconnect)."""

import flask
import functions_framework

from calsync.web import entrypoints


@functions_framework.http
def oauth_callback(request: flask.Request) -> flask.typing.ResponseReturnValue:
    """Run the OAuth consent and keep the refresh token."""
    return entrypoints.oauth_callback(request)
