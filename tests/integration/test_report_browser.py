"""The HTML report in a real headless browser: it loads, its script runs, its charts render.

Needs Debian's chromium (apt-get install chromium); skipped with the reason otherwise.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from tests.integration.test_report_cli import record_plan
from trimtab.adapters.ledger import SqlLedger, default_ledger_url
from trimtab.tca import load_execution
from trimtab.tca.html import render_html

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
WIDTH, HEIGHT = 1280, 2000


def _browser() -> str | None:
    configured = os.environ.get("TRIMTAB_TEST_CHROMIUM")
    if configured:
        return configured
    return next((path for name in BROWSERS if (path := shutil.which(name)) is not None), None)


@pytest.fixture(scope="module")
def browser() -> str:
    found = _browser()
    if found is None:
        pytest.skip("no headless browser: install Debian's chromium (apt-get install -y chromium)")
    return found


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("browser")
    home = folder / "home"
    record_plan(home, "browser-demo")
    with SqlLedger(default_ledger_url(home)) as ledger:
        record = load_execution(ledger, "browser-demo")
    target = folder / "report.html"
    target.write_text(render_html(record), encoding="utf-8")
    return target


def _run(browser: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [browser, *FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_page_loads_and_its_script_runs(browser: str, page: Path, tmp_path: Path) -> None:
    done = _run(browser, tmp_path / "profile", "--dump-dom", page.as_uri())
    assert done.returncode == 0, done.stderr[-2000:]
    dom = done.stdout
    # The inline script ran to its end: it marks the page ready and counts the charts.
    assert 'id="report-ready" data-ready="1"' in dom, dom[-2000:]
    assert "charts:" in dom
    charts = int(dom.split("charts:", 1)[1].split("<", 1)[0])
    assert charts >= 7


def _close(pixel: bytes, color: tuple[int, int, int], tolerance: int = 40) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(pixel, color, strict=True))


def test_a_screenshot_shows_the_charts(browser: str, page: Path, tmp_path: Path) -> None:
    shot = tmp_path / "report.png"
    done = _run(browser, tmp_path / "profile", f"--screenshot={shot}", f"--window-size={WIDTH},{HEIGHT}",
                page.as_uri())
    assert done.returncode == 0, done.stderr[-2000:]
    with Image.open(shot) as image:
        assert image.size == (WIDTH, HEIGHT)
        data = image.convert("RGB").tobytes()
    histogram = Counter(data[i : i + 3] for i in range(0, len(data), 3))
    background, count = histogram.most_common(1)[0]
    assert 1 - count / (WIDTH * HEIGHT) > 0.05, f"the page is (nearly) blank: {tuple(background)} everywhere"
    assert len(histogram) > 200
    # The charts' own colours: bid line, ask line, saving bars (the plan's fills beat arrival
    # or not, some bar is drawn in one of the two cost colours).
    counts = {
        name: sum(n for p, n in histogram.items() if _close(p, color))
        for name, color in {
            "bid": (37, 99, 235),
            "ask": (220, 38, 38),
            "saving": (5, 150, 105),
            "limit": (124, 58, 237),
        }.items()
    }
    assert counts["bid"] > 100, counts
    assert counts["ask"] + counts["saving"] > 100, counts
    assert counts["limit"] > 50, counts
