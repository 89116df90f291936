"""The local gateway serves the storefront's static build at `/`, as CloudFront does in the cloud."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette

from cloudshop.auth import InternalTokens, TokenVerifier
from cloudshop.gateway import build_gateway
from cloudshop.storefront import ASSET_CACHE_CONTROL, PAGE_CACHE_CONTROL, Storefront, content_security_policy

pytestmark = pytest.mark.anyio

SERVICES = ("user", "product", "order", "payment", "notification")
INDEX = "<!doctype html><title>cloudshop</title><script type=module src=/assets/index-abc123.js></script>"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def dist(tmp_path: Path) -> Path:
    """A build as Vite lays it out, with the by-products the site must not serve."""
    root = tmp_path / "dist"
    (root / "assets").mkdir(parents=True)
    (root / ".vite").mkdir()
    (root / "index.html").write_text(INDEX)
    (root / "assets" / "index-abc123.js").write_text("console.log('shop')")
    (root / "favicon.svg").write_text("<svg xmlns='http://www.w3.org/2000/svg'/>")
    (root / ".vite" / "manifest.json").write_text("{}")
    (root / "size-report.json").write_text("{}")
    return root


def gateway(key_pair: tuple[str, str], storefront: Storefront | None, seen: list[httpx.Request]) -> Starlette:
    def upstream(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        # Unread, as a real transport hands it over (the gateway forwards the raw bytes).
        body = b'{"items": [], "next_cursor": null}'
        return httpx.Response(200, headers={"content-type": "application/json"}, stream=httpx.ByteStream(body))

    return build_gateway(
        upstreams={service: f"http://{service}.internal:80" for service in SERVICES},
        verifier=TokenVerifier(key_pair[1], issuer="cloudshop"),
        session_active=lambda session_id: True,
        internal_tokens=InternalTokens({}, service="gateway"),
        upstream_transport=httpx.MockTransport(upstream),
        log_level="WARNING",
        storefront=storefront,
    )


@asynccontextmanager
async def http(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as client:
        yield client


def local(dist: Path) -> Storefront:
    return Storefront.local("http://127.0.0.1:8006", directory=dist)


async def test_the_root_is_the_storefront_page_with_the_cloud_s_security_headers(
    key_pair: tuple[str, str], dist: Path
) -> None:
    async with http(gateway(key_pair, local(dist), [])) as client:
        page = await client.get("/")

    assert page.status_code == 200 and page.text == INDEX
    assert page.headers["content-type"].startswith("text/html")
    assert page.headers["cache-control"] == PAGE_CACHE_CONTROL
    csp = page.headers["content-security-policy"]
    assert "script-src 'self';" in csp and "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert "frame-ancestors 'none'" in csp and "object-src 'none'" in csp
    # Product images are presigned links to the object store, and admins upload straight to it.
    assert "img-src 'self' http://127.0.0.1:8006;" in csp and "connect-src 'self' http://127.0.0.1:8006;" in csp
    assert page.headers["strict-transport-security"].startswith("max-age=63072000")
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["referrer-policy"] == "strict-origin-when-cross-origin"


async def test_hashed_assets_are_cached_for_a_year_and_other_files_are_revalidated(
    key_pair: tuple[str, str], dist: Path
) -> None:
    async with http(gateway(key_pair, local(dist), [])) as client:
        script = await client.get("/assets/index-abc123.js")
        again = await client.get("/assets/index-abc123.js", headers={"if-none-match": script.headers["etag"]})
        icon = await client.get("/favicon.svg")

    assert script.status_code == 200 and script.text == "console.log('shop')"
    assert "javascript" in script.headers["content-type"]
    assert script.headers["cache-control"] == ASSET_CACHE_CONTROL
    assert again.status_code == 304
    assert icon.headers["content-type"].startswith("image/svg+xml")
    assert icon.headers["cache-control"] == PAGE_CACHE_CONTROL
    assert "frame-ancestors 'none'" in icon.headers["content-security-policy"]


@pytest.mark.parametrize("path", ["/cart", "/orders/ord_0123abcd", "/admin/analytics", "/products/p-1", "/index.html"])
async def test_the_app_s_own_routes_get_the_page_so_that_deep_links_work(
    key_pair: tuple[str, str], dist: Path, path: str
) -> None:
    async with http(gateway(key_pair, local(dist), [])) as client:
        page = await client.get(path)
    assert page.status_code == 200 and page.text == INDEX
    assert page.headers["cache-control"] == PAGE_CACHE_CONTROL


@pytest.mark.parametrize(
    "path", ["/assets/gone-123.js", "/assets", "/robots.txt", "/.vite/manifest.json", "/size-report.json"]
)
async def test_missing_files_and_build_by_products_are_not_found(
    key_pair: tuple[str, str], dist: Path, path: str
) -> None:
    async with http(gateway(key_pair, local(dist), [])) as client:
        answer = await client.get(path)
    assert answer.status_code == 404
    assert answer.text != INDEX


async def test_the_api_routes_and_health_answer_as_before(key_pair: tuple[str, str], dist: Path) -> None:
    seen: list[httpx.Request] = []
    async with http(gateway(key_pair, local(dist), seen)) as client:
        products = await client.get("/api/v1/products", params={"q": "chess"})
        unknown = await client.get("/api/v1/no-such-route")
        outside = await client.get("/api/other")
        health = await client.get("/healthz")

    assert products.status_code == 200 and products.json() == {"items": [], "next_cursor": None}
    assert [(r.url.host, r.url.raw_path) for r in seen] == [("product.internal", b"/api/v1/products?q=chess")]
    assert "content-security-policy" not in products.headers
    for answer in (unknown, outside):
        assert answer.status_code == 404
        assert answer.headers["content-type"] == "application/problem+json"
    assert health.json()["status"] == "ok"


async def test_only_get_and_head_reach_the_storefront(key_pair: tuple[str, str], dist: Path) -> None:
    async with http(gateway(key_pair, local(dist), [])) as client:
        head = await client.head("/cart")
        post = await client.post("/cart", content=b"x")
    assert head.status_code == 200 and head.content == b""
    assert post.status_code == 405


async def test_without_a_build_the_page_says_to_run_make_web(key_pair: tuple[str, str], tmp_path: Path) -> None:
    async with http(gateway(key_pair, local(tmp_path / "no-dist"), [])) as client:
        page = await client.get("/")
        api = await client.get("/api/v1/products")
    assert page.status_code == 503
    assert "make web" in page.text
    assert api.status_code == 200


async def test_a_build_made_while_the_gateway_runs_is_served_on_the_next_request(
    key_pair: tuple[str, str], tmp_path: Path, dist: Path
) -> None:
    later = tmp_path / "later"
    async with http(gateway(key_pair, local(later), [])) as client:
        assert (await client.get("/")).status_code == 503
        dist.rename(later)
        assert (await client.get("/")).text == INDEX


async def test_without_a_storefront_the_gateway_answers_404_problems_outside_the_api(key_pair: tuple[str, str]) -> None:
    async with http(gateway(key_pair, None, [])) as client:
        answer = await client.get("/")
    assert answer.status_code == 404 and answer.headers["content-type"] == "application/problem+json"


def test_the_cloud_policy_upgrades_insecure_requests_and_the_local_one_does_not() -> None:
    cloud = content_security_policy(image_sources=["https://b.s3.amazonaws.com"], upgrade_insecure=True)
    assert cloud.endswith("; upgrade-insecure-requests")
    assert "upgrade-insecure-requests" not in content_security_policy()
