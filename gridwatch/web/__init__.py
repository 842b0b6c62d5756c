"""The web UI: static pages served by the API (operator dashboard, patrol view, admin pages).

Plain HTML, JavaScript modules and CSS from `static/`, no build step and nothing from another origin, so the
pages run under the API's Content-Security-Policy (`default-src 'self'`, no inline script or style). `GET /`
sends the browser to `/ui/` (keeping a notification's `#/alerts/ID`); the service worker is `/ui/sw.js` with
the scope `/ui/`. Assets are revalidated on every use (`no-cache`, with ETags): their names carry no
version, and an upgrade must reach every browser at its next load.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.types import Scope

from gridwatch.auth.deps import auth_of

STATIC = Path(__file__).parent / "static"
ASSET_CACHE = "no-cache"
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
}

MANIFEST: dict[str, Any] = {
    "name": "GridWatch",
    "short_name": "GridWatch",
    "description": "Village camera alerts for operators and patrols",
    "start_url": "/ui/",
    "scope": "/ui/",
    "display": "standalone",
    "background_color": "#0f172a",
    "theme_color": "#0f172a",
    "icons": [{"src": "/ui/icon.svg", "sizes": "any", "type": "image/svg+xml", "purpose": "any"}],
}

ICON = (
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 64 64">'
    '<rect width="64" height="64" rx="14" fill="#0f172a"/>'
    '<path d="M12 20h40M12 32h40M12 44h40M20 12v40M32 12v40M44 12v40" stroke="#334155" stroke-width="3"/>'
    '<circle cx="32" cy="32" r="11" fill="#f97316"/><circle cx="32" cy="32" r="5" fill="#fef3c7"/></svg>'
)


class UiFiles(StaticFiles):
    """The static directory with explicit content types and the UI's cache policy."""

    def file_response(
        self, full_path: Any, stat_result: Any, scope: Scope, status_code: int = 200
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        media_type = CONTENT_TYPES.get(Path(str(full_path)).suffix)
        if media_type is not None:
            response.headers["content-type"] = media_type
        response.headers["cache-control"] = ASSET_CACHE
        if str(full_path).endswith("sw.js"):
            response.headers["service-worker-allowed"] = "/ui/"
        return response


def install_ui(app: FastAPI) -> None:
    """Mount the UI's pages and assets on `app` (after the API's routes: they win over the mount)."""

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse("/ui/", status_code=307)

    @app.get("/ui", include_in_schema=False)
    def ui_without_slash() -> RedirectResponse:
        return RedirectResponse("/ui/", status_code=307)

    @app.get("/ui/manifest.webmanifest", include_in_schema=False)
    def manifest() -> JSONResponse:
        return JSONResponse(
            MANIFEST, media_type="application/manifest+json", headers={"Cache-Control": ASSET_CACHE}
        )

    @app.get("/ui/icon.svg", include_in_schema=False)
    def icon() -> Response:
        return Response(ICON, media_type="image/svg+xml", headers={"Cache-Control": "max-age=86400"})

    @app.get("/ui/bootstrap.json", include_in_schema=False)
    def bootstrap(request: Request) -> JSONResponse:
        """What the login page needs before anyone is logged in: whether first-run setup is open (no admin
        can log in yet, the same test `Auth.open_setup` makes)."""
        setup_needed = auth_of(request).db.count_admins() == 0
        return JSONResponse({"setup_needed": setup_needed}, headers={"Cache-Control": "no-store"})

    app.mount("/ui", UiFiles(directory=STATIC, html=True), name="ui")
