"""The storefront's build (`make web`): it type-checks, lints clean, and its first page stays small.

`make test` builds `web/dist` before the suite runs (npm ci from the committed lock file, then Vite);
the build writes `web/dist/size-report.json`, the compressed size of every JavaScript and CSS file the
first page loads, and fails above the budget. These tests hold the same lines inside the suite.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.web

WEB = Path(__file__).resolve().parents[2] / "web"
BUDGET_BYTES = 150 * 1024


def npm(script: str) -> subprocess.CompletedProcess[str]:
    if not (WEB / "node_modules").is_dir():
        pytest.fail("web/node_modules is missing: run `make web` (npm ci in web/)")
    npm_path = shutil.which("npm")
    assert npm_path, "npm is not on PATH: `make web` installs Node.js"
    return subprocess.run(
        [npm_path, "run", "--silent", script], cwd=WEB, capture_output=True, text=True, timeout=300, check=False
    )


@pytest.fixture(scope="module")
def size_report() -> dict:
    report = WEB / "dist" / "size-report.json"
    if not report.is_file():
        pytest.fail("web/dist/size-report.json is missing: run `make web`")
    return json.loads(report.read_text())


def test_the_typescript_type_checks() -> None:
    result = npm("typecheck")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]


def test_eslint_finds_nothing_accessibility_rules_included() -> None:
    result = npm("lint")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]


def test_the_first_page_loads_under_150_kb_of_compressed_javascript_and_css(size_report: dict) -> None:
    first = size_report["first_page"]
    assert size_report["budget_bytes"] == BUDGET_BYTES
    assert first["files"], "the report names no file the first page loads"
    assert {Path(f["file"]).suffix for f in first["files"]} == {".js", ".css"}
    assert first["gzip"] <= BUDGET_BYTES and first["brotli"] <= BUDGET_BYTES
    assert size_report["within_budget"] is True


def test_the_report_measures_what_index_html_loads(size_report: dict) -> None:
    index = (WEB / "dist" / "index.html").read_text()
    measured = {f["file"] for f in size_report["first_page"]["files"]}
    for file in measured:
        assert (WEB / "dist" / file).is_file()
    loaded = {part.split('"')[0] for part in index.split('="/')[1:] if part.split('"')[0].endswith((".js", ".css"))}
    assert loaded <= measured


def test_the_admin_console_is_not_part_of_the_first_page(size_report: dict) -> None:
    lazy = [f["file"] for f in size_report["lazy"]["files"]]
    assert any(Path(file).name.startswith("Admin-") for file in lazy), lazy


def test_the_built_page_has_no_inline_script_the_csp_would_block() -> None:
    index = (WEB / "dist" / "index.html").read_text()
    scripts = index.split("<script")[1:]
    assert scripts and all(" src=" in script.split(">")[0] for script in scripts)
    assert "style=" not in index
