"""Cloud Function: a Cloud Scheduler tick runs one sync cycle (Google -> Directus, plus repairs)."""

import flask
import functions_framework

from calsync.web import entrypoints


@functions_framework.http
def calendar_import(request: flask.Request) -> flask.typing.ResponseReturnValue:
    """Run one sync cycle and answer a JSON summary."""
    return entrypoints.calendar_import(request)
