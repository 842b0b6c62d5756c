"""What a 422 looks like, as the OpenAPI document tells clients.

FastAPI documents every 422 as its own `HTTPValidationError` (`{"detail": [ValidationError, ...]}`). The
app's routes also answer 422 themselves, with a `detail` that is a message, a list of messages, or a list
of `{field, message, line?}` (the registry's checks; a CSV import adds `total` and `errors`). The
document's `HTTPValidationError` is replaced by one schema that holds all of these, so a client generated
from it, or a checker such as schemathesis, accepts every 422 the app sends.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

FIELD_PROBLEM = {
    "title": "FieldProblem",
    "type": "object",
    "description": "One refused field: `field` names it (dotted), `line` is the CSV line where there is one",
    "properties": {
        "field": {"type": "string", "title": "Field"},
        "message": {"type": "string", "title": "Message"},
        "line": {"anyOf": [{"type": "integer"}, {"type": "null"}], "title": "Line"},
    },
    "required": ["field", "message"],
}


def unprocessable_schema() -> dict[str, Any]:
    """The schema of every 422 body (it refers to the document's `ValidationError` and `FieldProblem`)."""
    item = {
        "anyOf": [
            {"$ref": "#/components/schemas/ValidationError"},
            {"$ref": "#/components/schemas/FieldProblem"},
            {"type": "string"},
        ]
    }
    return {
        "title": "HTTPValidationError",
        "type": "object",
        "description": "A refused request: FastAPI's validation errors, or the app's own: a message, a "
        "list of messages, or a list of refused fields; a CSV import also gives `total` and `errors`",
        "properties": {
            "detail": {"anyOf": [{"type": "string"}, {"type": "array", "items": item}], "title": "Detail"},
            "total": {"type": "integer", "title": "Total", "description": "CSV import: errors in all"},
            "errors": {"type": "array", "items": {"$ref": "#/components/schemas/FieldProblem"}},
        },
        "required": ["detail"],
    }


def document_errors(app: FastAPI) -> None:
    """Make `app.openapi()` describe the app's own 422 bodies too (see the module's docstring)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                openapi_version=app.openapi_version,
                description=app.description,
                routes=app.routes,
            )
            schemas = schema.setdefault("components", {}).setdefault("schemas", {})
            if "HTTPValidationError" in schemas:
                schemas["HTTPValidationError"] = unprocessable_schema()
                schemas["FieldProblem"] = FIELD_PROBLEM
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
