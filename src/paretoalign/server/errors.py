"""The one error shape of the HTTP API, and the exception handlers that produce it.

Every error answer is ``{"error": {"message", "type", "path", "code"}}``: `type` is one of `ERROR_TYPES`, `path` the
JSON path of the offending part of the request body (``$`` for the whole body, ``$.items[0].response`` for one
field) and `code` the HTTP status. Handled here:

- `ApiError` (raised by the endpoints, e.g. an InputError on one item, located with `input_error`);
- FastAPI's `RequestValidationError`: malformed JSON -> 400 ``$``; a pydantic error -> 422 with the path of the
  first bad field (pydantic's ``loc``, without the ``body`` prefix and the ``~tag`` union branches of `schemas`);
- an `InputError` that escaped an endpoint -> 422 ``$``;
- Starlette's `HTTPException` (404 unknown route, 405 wrong method, 413, ...) -> its status;
- anything else -> 500, logged with its traceback. Bad input never gets here: every check above answers 4xx.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from paretoalign.errors import InputError

logger = logging.getLogger("paretoalign.server")

ERROR_TYPES = ("invalid_request", "unauthorized", "too_large", "not_found", "unavailable", "internal")
TAG_PREFIX = "~"
"""Union branches in `schemas` are tagged ``~name``; such ``loc`` parts are not part of the JSON path."""
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_JSON_TYPES = {bool: "boolean", int: "number", float: "number", str: "string", list: "array", dict: "object",
               type(None): "null"}


def error_type(status: int) -> str:
    """The error `type` of an HTTP status."""
    return {401: "unauthorized", 403: "unauthorized", 404: "not_found", 413: "too_large",
            503: "unavailable"}.get(status, "internal" if status >= 500 else "invalid_request")


class ApiError(Exception):
    """An error answer: HTTP status, message, the JSON path it concerns, and its type (from the status)."""

    def __init__(self, status: int, message: str, *, path: str = "$", type: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = int(status)
        self.message = message
        self.path = path
        self.type = type or error_type(self.status)
        self.headers = headers

    def response(self) -> JSONResponse:
        """The JSON answer."""
        return error_response(self.status, self.message, path=self.path, type=self.type, headers=self.headers)


def error_body(status: int, message: str, *, path: str = "$", type: str | None = None) -> dict[str, Any]:
    """``{"error": {...}}`` of the API's error shape."""
    return {"error": {"message": message, "type": type or error_type(status), "path": path, "code": int(status)}}


def error_response(status: int, message: str, *, path: str = "$", type: str | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    """The JSON error answer."""
    return JSONResponse(error_body(status, message, path=path, type=type), status_code=status, headers=headers)


def json_path(loc: Sequence[str | int], root: str = "$") -> str:
    """A JSON path from a pydantic ``loc``: ("items", 0, "response") -> "$.items[0].response"; union tags (``~x``)
    are skipped; a key that is not an identifier is quoted: ("weights", "a b") -> '$.weights["a b"]'."""
    path = root
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif isinstance(part, str) and part.startswith(TAG_PREFIX):
            continue
        elif _IDENTIFIER.match(str(part)):
            path += f".{part}"
        else:
            path += f"[{json.dumps(str(part), ensure_ascii=False)}]"
    return path


def input_error(exc: InputError, path: str, status: int = 422) -> ApiError:
    """An InputError about the part of the request at `path`, as an error answer (its reason as the message)."""
    return ApiError(status, exc.reason, path=path)


def _json_type(value: Any) -> str:
    return _JSON_TYPES.get(type(value), type(value).__name__)


def validation_error(errors: Sequence[dict[str, Any]]) -> ApiError:
    """The answer to FastAPI's validation errors: 400 for malformed JSON, else 422 at the first error's path."""
    if not errors:
        return ApiError(422, "invalid request")
    first = errors[0]
    loc = list(first.get("loc") or ())
    if loc and loc[0] == "body":
        loc = loc[1:]
    kind = first.get("type", "")
    if kind == "json_invalid":
        detail = (first.get("ctx") or {}).get("error") or first.get("msg") or "JSON decode error"
        where = f" at character {loc[0]}" if loc and isinstance(loc[0], int) else ""
        return ApiError(400, f"the body is not valid JSON: {detail}{where}", path="$")
    if not loc and isinstance(first.get("input"), (bytes, bytearray)):
        return ApiError(415, "send the body as JSON, with the header Content-Type: application/json", path="$")
    message = str(first.get("msg") or "invalid value")
    if kind.endswith("_type") or kind in ("model_attributes_type", "union_tag_invalid"):
        message += f" (got {_json_type(first.get('input'))})"
    if kind == "missing":
        message = "this field is required"
    elif kind == "value_error":
        message = str((first.get("ctx") or {}).get("error") or message)
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more error{'s' if len(errors) > 2 else ''})"
    return ApiError(422, message, path=json_path(loc))


async def _api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return exc.response()


async def _request_validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return validation_error(list(exc.errors())).response()


async def _input_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, InputError)
    return error_response(422, str(exc), path="$")


async def _http_exception(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    messages = {404: f"no such endpoint: {request.method} {request.url.path}",
                405: f"{request.method} is not allowed on {request.url.path}"}
    detail = exc.detail if isinstance(exc.detail, str) and exc.detail else None
    message = messages.get(exc.status_code) if exc.status_code in messages else detail or "request refused"
    return error_response(exc.status_code, message, path="$", headers=dict(exc.headers or {}) or None)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    logger.error("unexpected error answering %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, f"internal error ({type(exc).__name__}); see the server log", path="$")


def install_error_handlers(app: FastAPI) -> None:
    """Answer every error of `app` in the API's error shape (see the module)."""
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _request_validation)
    app.add_exception_handler(InputError, _input_error)
    app.add_exception_handler(StarletteHTTPException, _http_exception)
    app.add_exception_handler(Exception, _unexpected)
