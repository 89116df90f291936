"""The storefront and admin console (`web/`): its static build, and the headers it is served with.

One declaration, two realisations, as for the estate: the local gateway serves `web/dist` at `/`
(`Storefront`), and in the cloud CloudFront serves the same files from a private S3 bucket
(`cdk/storefront.py`). Both send the security headers declared here, and both cache the same way:
hashed files under `assets/` for a year, everything else revalidated on each load. Every other path
that is not a file is the single-page app's own route, so it gets `index.html`.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import urlsplit

import anyio
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.staticfiles import StaticFiles

from cloudshop.estate import API_PREFIX

DIST = Path(__file__).resolve().parent.parent / "web" / "dist"
INDEX = "index.html"

# Vite names every file under assets/ by its content hash: a changed file is a new name.
ASSETS_DIR = "assets"
ASSET_CACHE_CONTROL = "public, max-age=31536000, immutable"
PAGE_CACHE_CONTROL = "no-cache"
# Build by-products that are not part of the site, as `aws s3 sync` patterns: served nowhere, uploaded
# nowhere (the size report is for the tests and for people).
NOT_SERVED = (".vite/*", "size-report.json")

HSTS_MAX_AGE_SECONDS = 2 * 365 * 24 * 3600
REFERRER_POLICY = "strict-origin-when-cross-origin"
FRAME_OPTIONS = "DENY"
PERMISSIONS_POLICY = "camera=(), microphone=(), geolocation=(), payment=(), usb=()"
OPENER_POLICY = "same-origin"


def origin(url: str) -> str:
    """`scheme://host[:port]` of a URL: what a CSP source names."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def content_security_policy(
    *, image_sources: Iterable[str] = (), connect_sources: Iterable[str] = (), upgrade_insecure: bool = False
) -> str:
    """The storefront's CSP: its own scripts and styles only (nothing inline, nothing eval'd), never framed.

    `image_sources` and `connect_sources` add the object store: product images are presigned S3 links,
    and the admin console uploads an image with a presigned POST straight to S3.
    """
    directives: dict[str, list[str]] = {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", *image_sources],
        "connect-src": ["'self'", *connect_sources],
        "font-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    }
    policy = "; ".join(f"{name} {' '.join(dict.fromkeys(sources))}" for name, sources in directives.items())
    return policy + ("; upgrade-insecure-requests" if upgrade_insecure else "")


def security_headers(csp: str) -> dict[str, str]:
    """The headers CloudFront's response headers policy sets, for the local gateway to send the same."""
    return {
        "content-security-policy": csp,
        "strict-transport-security": f"max-age={HSTS_MAX_AGE_SECONDS}; includeSubDomains",
        "x-content-type-options": "nosniff",
        "x-frame-options": FRAME_OPTIONS,
        "referrer-policy": REFERRER_POLICY,
        "permissions-policy": PERMISSIONS_POLICY,
        "cross-origin-opener-policy": OPENER_POLICY,
    }


NOT_BUILT = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>cloudshop: storefront not built</title></head>
<body><h1>The storefront is not built yet</h1>
<p>Run <code>make web</code> (it runs <code>npm ci &amp;&amp; npm run build</code> in <code>web/</code>), then reload
this page; <code>make run</code> does it for you. The API is up meanwhile:
<a href="/api/v1/products">/api/v1/products</a>.</p></body></html>
"""


class Storefront:
    """Serves a static build the way CloudFront does in the cloud (see the module docstring).

    The directory is looked up on every request, so `make web` while the platform runs takes effect
    on the next reload; without a build, pages answer 503 with what to run.
    """

    def __init__(self, directory: Path = DIST, *, content_security_policy: str) -> None:
        self.directory = directory
        self.headers = security_headers(content_security_policy)
        self.files = StaticFiles(directory=directory, check_dir=False)

    @classmethod
    def local(cls, aws_endpoint_url: str | None, directory: Path = DIST) -> Storefront:
        """The local gateway's: images and uploads go to the local S3 endpoint (moto) beside it."""
        store = [origin(aws_endpoint_url)] if aws_endpoint_url else []
        return cls(
            directory, content_security_policy=content_security_policy(image_sources=store, connect_sources=store)
        )

    @staticmethod
    def serves(path: str) -> bool:
        """Is `path` the storefront's? All but the API's prefix, whose unknown paths stay 404 problems."""
        api_root = "/" + API_PREFIX.strip("/").split("/")[0]
        return not (path == api_root or path.startswith(f"{api_root}/"))

    async def respond(self, request: Request) -> Response:
        response = await self._respond(request)
        response.headers.update(self.headers)
        return response

    async def _respond(self, request: Request) -> Response:
        if request.method not in ("GET", "HEAD"):
            return PlainTextResponse("Method not allowed", status_code=405, headers={"allow": "GET, HEAD"})
        index, index_stat = await anyio.to_thread.run_sync(self.files.lookup_path, INDEX)
        if index_stat is None:
            return HTMLResponse(NOT_BUILT, status_code=503, headers={"cache-control": "no-store"})
        path = self.files.get_path(request.scope)  # normalised and relative: "." for "/"
        parts = () if path == "." else Path(path).parts
        hidden = any(part.startswith(".") for part in parts)
        if hidden or any(fnmatch.fnmatchcase(Path(path).as_posix(), pattern) for pattern in NOT_SERVED):
            return PlainTextResponse("Not found", status_code=404)
        if parts and parts != (INDEX,):
            try:
                response = await self.files.get_response(path, request.scope)
            except HTTPException as exc:
                # A missing file is a 404; any other path is one of the app's routes (below).
                if exc.status_code != 404 or "." in parts[-1] or parts[0] == ASSETS_DIR:
                    return PlainTextResponse("Not found", status_code=exc.status_code)
            else:
                hashed = parts[0] == ASSETS_DIR
                response.headers["cache-control"] = ASSET_CACHE_CONTROL if hashed else PAGE_CACHE_CONTROL
                return response
        # The app's own routes (/cart, /orders/ord_1, /admin, ...) get the page, which routes on the client.
        page = self.files.file_response(index, index_stat, request.scope)
        page.headers["cache-control"] = PAGE_CACHE_CONTROL
        return page
