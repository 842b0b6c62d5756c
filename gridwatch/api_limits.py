"""Request limits and response hardening for the API, as plain ASGI middleware (no app code runs for a
request they refuse).

`BodyLimit` answers 413 to a request body over the limit: at once when its Content-Length says so (nothing
of the body is read), otherwise by counting a chunked body while it streams in and stopping at the limit.
The body is read in full, up to the limit, before the app runs: every route that takes a body parses it
whole anyway (JSON), and this way no route can be handed a body it did not have to take.

`TextGuard` answers 400 to a request that would hand a route text no database column can hold: a NUL
character in the path, the query or a string of a JSON body (PostgreSQL refuses NUL in text: the query
failed with a server error), or a lone surrogate in a JSON string (`"\\ud800"`: not encodable as UTF-8, so
neither database driver can send it). No id, name, filter or note has a use for either.

`SecurityHeaders` adds to every response it sees `X-Content-Type-Options: nosniff`, `Referrer-Policy:
same-origin`, `X-Frame-Options: DENY`, and to HTML responses a Content-Security-Policy (see `page_csp`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from fastapi import FastAPI
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from storage.objectstore import ObjectStore

DEFAULT_MAX_BODY_BYTES = 1024 * 1024  # what `api.max_body_bytes` would default to

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}

# FastAPI's /docs and /redoc pages load Swagger UI / ReDoc from a CDN and start it with an inline script;
# they show only the OpenAPI document, never data, so they get a policy that lets exactly that run.
DOCS_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
    "style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net https://fonts.googleapis.com; "
    "font-src 'self' https://fonts.gstatic.com; img-src 'self' data: https://fastapi.tiangolo.com "
    "https://cdn.redoc.ly; worker-src 'self' blob:; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)


def page_csp(media_origins: Iterable[str] = ()) -> str:
    """The policy of the app's own HTML pages: everything from this origin only, no plugins, no framing,
    no inline script.

    Snapshots, thumbnails and clips are linked as `/api/v1/alerts/{id}/...`, which redirect (307) to a
    presigned URL on the object store; a browser checks the redirect's target against img-src/media-src
    as well, so the store's origin must be listed there (and only there: scripts and styles never come
    from it). `data:` and `blob:` are for images a page draws itself (canvas exports, placeholders); `*`
    is not used: it would let injected markup beacon data to any host through an image URL.
    """
    media = " ".join(["'self'", *media_origins])
    return (
        f"default-src 'self'; img-src {media} data: blob:; media-src {media} blob:; object-src 'none'; "
        "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    )


async def _send_json(send: Send, status: int, detail: str, *, close: bool = True) -> None:
    """Answer `{"detail": ...}`; `close`: the request's body was not read to its end, so the server closes
    the connection after the answer instead of draining the rest."""
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


class BodyLimit:
    """Bodies over `max_body_bytes` get 413; the paths of `larger` (a bulk import) have their own limit."""

    def __init__(
        self,
        app: ASGIApp,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        larger: Mapping[str, int] | None = None,
    ) -> None:
        if max_body_bytes < 0:
            raise ValueError("max_body_bytes must be 0 or more")
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.larger = dict(larger or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.larger.get(scope["path"], self.max_body_bytes)
        too_large = f"the request body is over {limit} bytes"
        declared = Headers(scope=scope).getlist("content-length")
        if declared:
            if len(set(declared)) != 1 or not declared[0].strip().isdigit():
                await _send_json(send, 400, "invalid Content-Length")
                return
            if int(declared[0]) > limit:
                await _send_json(send, 413, too_large)
                return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client left while sending: nobody to answer
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await _send_json(send, 413, too_large)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        await self.app(scope, _replay(b"".join(chunks), receive), send)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that hands the app the body read already, then what the server says next (disconnect)."""
    pending: list[Message] = [{"type": "http.request", "body": body, "more_body": False}]

    async def replay() -> Message:
        return pending.pop() if pending else await receive()

    return replay


_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def _strings(value: Any) -> Iterator[str]:
    """Every string in a parsed JSON document, keys included (iteratively: a deep document is no problem)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            yield item
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def _unstorable_json(body: bytes) -> bool:
    """Whether `body`, read as JSON the way the routes read it, holds a string no column can store. A body
    that is not JSON is left to the route (which answers 422)."""
    if b"\\u" not in body:  # valid JSON carries either only as an escape (raw NUL is invalid JSON)
        return False
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        return False
    return any(_UNSTORABLE.search(text) for text in _strings(document))


class TextGuard:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        query: bytes = scope.get("query_string", b"")
        if "\x00" in scope["path"] or b"\x00" in query or b"%00" in query:
            await _send_json(send, 400, "the path or the query holds a NUL character", close=False)
            return
        chunks: list[bytes] = []
        while True:  # behind BodyLimit: one message, at most the limit
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if _unstorable_json(body):
            await _send_json(
                send, 400, "a string of the body holds a NUL character or a lone surrogate", close=False
            )
            return
        await self.app(scope, _replay(body, receive), send)


class SecurityHeaders:
    def __init__(
        self,
        app: ASGIApp,
        *,
        html_csp: str | None = None,
        csp_by_path: Mapping[str, str] | None = None,
    ) -> None:
        self.app = app
        self.html_csp = html_csp or page_csp()
        self.csp_by_path = dict(csp_by_path or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        csp = self.csp_by_path.get(scope["path"], self.html_csp)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers.setdefault(name, value)
                if headers.get("content-type", "").lower().startswith("text/html"):
                    headers.setdefault("Content-Security-Policy", csp)
            await send(message)

        await self.app(scope, receive, send_with_headers)


def install_limits(
    app: FastAPI,
    media_origin: str,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    larger: Mapping[str, int] | None = None,
) -> None:
    """Add the middlewares to `app`: the headers outermost, so that a 413 or 400 carries them too; the body
    limit before the text guard, which reads the body only once it is known to be small."""
    app.add_middleware(TextGuard)
    app.add_middleware(BodyLimit, max_body_bytes=max_body_bytes, larger=larger)
    docs = {
        path: DOCS_CSP for path in (app.docs_url, app.redoc_url, app.swagger_ui_oauth2_redirect_url) if path
    }
    app.add_middleware(SecurityHeaders, html_csp=page_csp([media_origin]), csp_by_path=docs)


def store_origin(store: ObjectStore) -> str:
    """The origin of the store's presigned URLs (the browser is redirected there for media)."""
    return f"{'https' if store.secure else 'http'}://{store.endpoint}"
