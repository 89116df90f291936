"""Browser tests: the storefront and admin console in a real Chromium, against `cloudshop up`.

Chromium is Debian's (`make system-deps` installs the `chromium` package); Playwright for Python (the dev
extra, pinned) drives it by its path, so nothing is downloaded at run time. The platform is started the
way a user starts it, on a free base port with its own state dir (the embedded profile), and serves
the build `make web` wrote to `web/dist`. Every step's screenshot is saved under
`test-artifacts/browser/` (CI keeps the directory as an artifact).
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fixtures.platform import cloudshop_up, free_base_port

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts" / "browser"
CHROMIUM = os.environ.get("CLOUDSHOP_CHROMIUM", "/usr/bin/chromium")
# Headless, and quiet: no first-run UI, no background downloads (component updates, sync, QUIC probes).
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ADMIN = {"email": "admin@cloudshop.local", "password": "cloudshop-admin-1"}
ADDRESS = {
    "name": "Asha Rao",
    "line1": "1 MG Road",
    "city": "Bengaluru",
    "state": "KA",
    "postal_code": "560001",
    "country": "IN",
}


@dataclass
class Platform:
    url: str
    state_dir: Path
    api: httpx.Client

    def token(self, email: str, password: str) -> str:
        answer = self.api.post("/auth/login", json={"email": email, "password": password})
        answer.raise_for_status()
        return str(answer.json()["access_token"])

    def new_buyer(self, name: str = "Buyer") -> tuple[str, str, dict[str, str]]:
        """A registered customer: (email, password, auth headers)."""
        email = f"{name.lower()}-{uuid.uuid4().hex[:8]}@example.com"
        password = "buyer-pass-42"
        registered = self.api.post("/auth/register", json={"email": email, "password": password, "name": name})
        assert registered.status_code == 201, registered.text
        return email, password, {"Authorization": f"Bearer {self.token(email, password)}"}

    def admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(ADMIN['email'], ADMIN['password'])}"}


# Module scope, not session: the platform and Playwright end with the browser tests. Playwright's
# sync API keeps an asyncio loop running in this thread while it is open, and every async test after
# it (anyio) would find the loop taken.
@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    state = tmp_path_factory.mktemp("browser-up")
    base = free_base_port()
    url = f"http://127.0.0.1:{base}"
    with cloudshop_up(state, base_port=base):
        page = httpx.get(f"{url}/", timeout=10)
        if page.status_code != 200:
            pytest.fail(f"the gateway does not serve the storefront ({page.status_code}): run `make web` first")
        with httpx.Client(base_url=f"{url}/api/v1", timeout=30) as api:
            yield Platform(url=url, state_dir=state, api=api)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `make system-deps` installs Debian's chromium package")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    ARTIFACTS.mkdir(parents=True)
    return ARTIFACTS


@pytest.fixture
def open_page(browser: Any, platform: Platform, artifacts: Path) -> Iterator[Callable[..., Any]]:
    """`open_page(width=1280, height=800)`: a page in a fresh context (its own storage: a new visitor)."""
    contexts: list[Any] = []

    def opener(*, width: int = 1280, height: int = 800) -> Any:
        context = browser.new_context(base_url=platform.url, viewport={"width": width, "height": height})
        context.set_default_timeout(15_000)
        contexts.append(context)
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        page.errors = errors
        return page

    yield opener
    for context in contexts:
        context.close()


@pytest.fixture
def shot(artifacts: Path, request: pytest.FixtureRequest) -> Callable[[Any, str], Path]:
    """`shot(page, "step")`: a screenshot of the step, as test-artifacts/browser/<test>/<nn>-<step>.png."""
    directory = artifacts / request.node.name.removeprefix("test_")[:60]
    directory.mkdir(parents=True, exist_ok=True)
    taken = 0

    def take(page: Any, step: str, *, full_page: bool = False) -> Path:
        nonlocal taken
        taken += 1
        path = directory / f"{taken:02d}-{step}.png"
        page.screenshot(path=str(path), full_page=full_page)
        return path

    return take
