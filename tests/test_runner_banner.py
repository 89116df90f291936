"""What `make run` prints once the platform is up: the storefront's URL comes first."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloudshop.local import runner


def urls(text: str) -> list[str]:
    return [word for line in text.splitlines() for word in line.split() if word.startswith("http://")]


def test_the_banner_opens_with_the_storefront_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dist = tmp_path / "dist"
    dist.mkdir()
    (dist / "index.html").write_text("<!doctype html>")
    monkeypatch.setattr(runner, "STOREFRONT_DIST", dist)
    text = runner.banner(runner.Platform(profile="embedded", state_dir=tmp_path, base_port=9000), {})

    assert urls(text)[0] == "http://127.0.0.1:9000/"
    first = next(line for line in text.splitlines() if "http://" in line)
    assert first.split()[0] == "storefront" and "/admin" in first


def test_without_a_build_the_banner_says_to_run_make_web(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner, "STOREFRONT_DIST", tmp_path / "missing")
    text = runner.banner(runner.Platform(profile="embedded", state_dir=tmp_path, base_port=9000), {})
    first = next(line for line in text.splitlines() if "http://" in line)
    assert "http://127.0.0.1:9000/" in first and "make web" in first
