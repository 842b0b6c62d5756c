"""How the API serves the UI: the redirect to /ui/, content types, cache policy, the CSP on the page, the
service worker and the manifest; and that the pages' code never builds HTML from strings or runs inline."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import httpx

from gridwatch.web import STATIC

if TYPE_CHECKING:
    from conftest import Served


def test_the_ui_is_served_with_its_types_cache_policy_and_csp(served: Served) -> None:
    with httpx.Client(base_url=served.url, timeout=10) as client:
        root = client.get("/", follow_redirects=False)
        assert root.status_code == 307 and root.headers["location"] == "/ui/"
        assert client.get("/ui", follow_redirects=False).headers["location"] == "/ui/"

        page = client.get("/ui/")
        assert page.status_code == 200
        assert page.headers["content-type"] == "text/html; charset=utf-8"
        csp = page.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "unsafe-inline" not in csp and "unsafe-eval" not in csp
        assert page.headers["cache-control"] == "no-cache" and page.headers["etag"]
        assert page.headers["x-frame-options"] == "DENY"
        assert client.get("/ui/", headers={"If-None-Match": page.headers["etag"]}).status_code == 304

        for path, kind in [
            ("/ui/js/app.js", "text/javascript; charset=utf-8"),
            ("/ui/js/operator.js", "text/javascript; charset=utf-8"),
            ("/ui/app.css", "text/css; charset=utf-8"),
            ("/ui/sw.js", "text/javascript; charset=utf-8"),
            ("/ui/manifest.webmanifest", "application/manifest+json"),
            ("/ui/icon.svg", "image/svg+xml"),
        ]:
            r = client.get(path)
            assert r.status_code == 200, path
            assert r.headers["content-type"] == kind, path
            assert r.headers["x-content-type-options"] == "nosniff"
        assert client.get("/ui/sw.js").headers["service-worker-allowed"] == "/ui/"
        manifest = client.get("/ui/manifest.webmanifest").json()
        assert manifest["start_url"] == "/ui/" and manifest["scope"] == "/ui/"

        assert client.get("/ui/js/nope.js").status_code == 404
        assert client.get("/ui/../gridwatch/api.py").status_code == 404
        assert client.get("/ui/bootstrap.json").json() == {"setup_needed": True}  # no admin yet
        served.add_user("root", "admin")
        assert client.get("/ui/bootstrap.json").json() == {"setup_needed": False}
        # the API keeps its own answers
        assert client.get("/api/v1/alerts").status_code == 401


def test_the_pages_never_build_html_from_strings_nor_run_inline_code() -> None:
    html = (STATIC / "index.html").read_text()
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), "inline <script> in index.html"
    assert not re.search(r"\sstyle=|\son\w+=", html), "inline style or handler in index.html"
    scripts = sorted(STATIC.rglob("*.js"))
    assert len(scripts) >= 10
    for path in scripts:
        code = path.read_text()
        for banned in (
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
            "new Function",
        ):
            assert banned not in code, f"{path.name} uses {banned}"
        assert not re.search(r"setAttribute\(\s*[\"'](style|on\w+)", code), (
            f"{path.name} sets style/on* attributes"
        )
        code = code.replace('"http://www.w3.org/2000/svg"', "SVG_NAMESPACE")  # a name, never fetched
        assert "http://" not in code and "https://" not in code, f"{path.name} refers to another origin"
    assert "@import" not in (STATIC / "app.css").read_text()
