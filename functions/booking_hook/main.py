"""Cloud Function: the Directus Flow webhook on bookings create/update/delete."""

import flask
import functions_framework

from calsync.web import entrypoints


@functions_framework.http
def booking_hook(request: flask.Request) -> flask.typing.ResponseReturnValue:
    """Write the Google events for the bookings in a Directus Flow delivery."""
    return entrypoints.booking_hook(request)
