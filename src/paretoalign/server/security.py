"""What stands between the network and the endpoints: the bind check, the API token, the body limit and CORS.

- `check_bind(host, api_key)`: listening on anything but a loopback address needs an API token (InputError naming
  --host otherwise), checked before any model loads.
- `load_api_key(path)`: the token is the file's text without surrounding whitespace (InputError naming the file
  when it is missing, unreadable or empty). Nothing is ever unpickled: the token is plain text.
- `BearerAuthMiddleware` (pure ASGI): with a token, every HTTP request must send ``Authorization: Bearer <token>``
  (compared with `hmac.compare_digest`), else 401 with ``WWW-Authenticate: Bearer``. Open without a token:
  ``GET /health`` (probes) and the explorer's static files (``GET /`` and ``/explorer/...``: page, script and
  style, no model data). The page asks the user for the token and sends it on its API calls, so every endpoint
  that reveals or uses the model (``/v1/models`` and ``/metrics`` included) stays behind the token.
- `BodyLimitMiddleware` (pure ASGI): a request whose Content-Length is over the limit gets 413 before any of its
  body is read; a body without one (chunked) is counted as it arrives and refused with 413 the moment it passes
  the limit. A body within the limit is read whole, then handed to the app; a client that disconnects mid-body
  gets no answer and the app never runs.
- CORS is off unless origins are given (`cors_middleware_options`, for Starlette's CORSMiddleware): then those
  origins only, methods GET / POST, headers Authorization / Content-Type, no cookies.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from paretoalign.errors import InputError
from paretoalign.server.errors import error_body

LOOPBACK_NAMES = ("localhost",)
OPEN_PATHS = ("/health",)
"""Answered without a token (GET / HEAD)."""
STATIC_PATHS = ("/",)
STATIC_PREFIX = "/explorer/"
"""The explorer's static files, answered without a token (GET / HEAD): they hold no model data."""


def is_loopback(host: str) -> bool:
    """Whether `host` is a loopback address (127.0.0.0/8, ::1) or ``localhost``."""
    name = host.strip().strip("[]").lower()
    if name in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def check_bind(host: str, api_key: str | None) -> None:
    """InputError (field --host) when `host` is not a loopback address and no API token is set."""
    if api_key is None and not is_loopback(host):
        raise InputError(f"listening on {host!r} lets other machines call this server: give --api-key-file FILE "
                         f"(a token every request must send), or listen on 127.0.0.1", field="--host")


def load_api_key(path: str | Path) -> str:
    """The API token in file `path` (its text, stripped); InputError naming the file when missing or empty."""
    p = Path(path).expanduser()
    if p.is_dir():
        raise InputError("is a folder; expected a file holding the API token", path=str(path), field="--api-key-file")
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError("file not found", path=str(path), field="--api-key-file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read the API token ({type(exc).__name__}: {exc})", path=str(path),
                         field="--api-key-file") from None
    token = text.strip()
    if not token:
        raise InputError("the file is empty; it must hold the API token", path=str(path), field="--api-key-file")
    if any(c.isspace() for c in token) or not token.isprintable():
        raise InputError("the API token must be one line of printable characters without spaces", path=str(path),
                         field="--api-key-file")
    return token


async def send_json_error(send: Send, status: int, message: str, *, path: str = "$",
                          headers: Sequence[tuple[bytes, bytes]] = ()) -> None:
    """Answer with the API's JSON error body (pure ASGI, for the middlewares)."""
    body = json.dumps(error_body(status, message, path=path)).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": body})


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers") or ():
        if key.lower() == name:
            return value
    return None


def is_open(method: str, path: str) -> bool:
    """Whether a request is answered without a token: GET/HEAD of /health or of the explorer's static files."""
    if method not in ("GET", "HEAD"):
        return False
    return path in OPEN_PATHS or path in STATIC_PATHS or path.startswith(STATIC_PREFIX)


class BearerAuthMiddleware:
    """401 unless the request sends ``Authorization: Bearer <token>`` (see the module for the open paths)."""

    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self.app = app
        self._token = token.encode("utf-8") if token else None

    def authorized(self, scope: Scope) -> bool:
        """Whether the request carries the token."""
        header = _header(scope, b"authorization")
        if header is None:
            return False
        scheme, _, given = header.partition(b" ")
        return scheme.lower() == b"bearer" and hmac.compare_digest(given.strip(), self._token or b"")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self._token is None or is_open(scope["method"], scope["path"]) \
                or self.authorized(scope):
            await self.app(scope, receive, send)
            return
        given = _header(scope, b"authorization") is not None
        await send_json_error(send, 401, "the API token was not accepted" if given else
                              "this server needs an API token: send 'Authorization: Bearer <token>'",
                              headers=[(b"www-authenticate", b"Bearer")])


class _Disconnected(Exception):
    """The client went away before sending its whole body."""


class BodyLimitMiddleware:
    """413 for request bodies over `max_bytes` (see the module); the app gets the body only once it is all in."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = int(max_bytes)

    def _too_large(self) -> str:
        return f"the request body is over the limit of {self.max_bytes:,} bytes (--max-body-bytes)"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = _header(scope, b"content-length")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                await send_json_error(send, 400, "the Content-Length header is not a number")
                return
            if declared > self.max_bytes:
                await send_json_error(send, 413, self._too_large(), headers=[(b"connection", b"close")])
                return
        try:
            chunks = await self._read_body(receive)
        except _Disconnected:
            return
        if chunks is None:
            await send_json_error(send, 413, self._too_large(), headers=[(b"connection", b"close")])
            return
        body = b"".join(chunks)
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: wait for the disconnect, as the server would

        await self.app(scope, replay, send)

    async def _read_body(self, receive: Receive) -> list[bytes] | None:
        """The body's chunks, or None as soon as they pass the limit."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _Disconnected
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                return None
            if chunk:
                chunks.append(chunk)
            if not message.get("more_body", False):
                return chunks


def cors_middleware_options(origins: Sequence[str]) -> dict[str, Any]:
    """Keyword arguments of Starlette's CORSMiddleware for exactly these origins."""
    return {"allow_origins": list(origins), "allow_methods": ["GET", "POST"],
            "allow_headers": ["authorization", "content-type"], "allow_credentials": False, "max_age": 600}
