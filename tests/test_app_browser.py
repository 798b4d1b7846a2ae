"""The app in a real browser: Debian's Chromium driven by Playwright (skipped when either is missing)."""

import shutil
from pathlib import Path

import pytest

from tests.app_server import running_app

CHROMIUM = "/usr/bin/chromium"
playwright = pytest.importorskip("playwright.sync_api")
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium")


@pytest.mark.slow
def test_curves_render_and_inspect_colours_tokens(micro_experiment, tmp_path):
    root, experiment, _ = micro_experiment
    runs = tmp_path / "runs"
    shutil.copytree(root / experiment, runs / "demo")  # the app opens on the demo experiment
    with running_app(runs) as url, playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(url)
        page.get_by_role("tab", name="Curves").click()
        # 2 variants x (upper, lower, mean) traces drawn by plotly
        traces = "document.querySelectorAll('.js-plotly-plot .scatterlayer .trace').length >= 6"
        page.wait_for_function(traces, timeout=30_000)
        page.screenshot(path=str(tmp_path / "curves.png"), full_page=True)
        page.get_by_role("tab", name="Inspect").click()
        page.get_by_label("Text").fill("The Union is strong and our people are free.")
        page.get_by_role("button", name="Inspect", exact=True).click()
        page.wait_for_function("document.body.innerText.includes('mean loss')", timeout=30_000)
        tokens = page.locator(".score-token")
        assert tokens.count() >= 8
        colours = {tokens.nth(i).evaluate("e => getComputedStyle(e).backgroundColor") for i in range(8)}
        assert len(colours) > 1  # tokens are coloured by their router weight, not all alike
        page.screenshot(path=str(tmp_path / "inspect.png"), full_page=True)
        browser.close()
    assert (tmp_path / "inspect.png").stat().st_size > 10_000
