"""A newcomer's first hour, in a real browser: Debian's Chromium driven by Playwright (skipped
when either is missing). The journey itself is tests/journey.py, shared with the screenshots."""

import re
import shutil
from pathlib import Path

import pytest

from tests import journey
from tests.app_server import running_app

playwright = pytest.importorskip("playwright.sync_api")
pytestmark = pytest.mark.skipif(not Path(journey.CHROMIUM).exists(), reason="needs Debian's chromium")


@pytest.mark.slow
def test_first_hour_journey(micro_experiment, tmp_path):
    root, experiment, _ = micro_experiment
    runs = tmp_path / "runs"
    shutil.copytree(root / experiment, runs / "demo")  # the app opens on the demo experiment
    shots = tmp_path / "shots"
    shots.mkdir()
    with running_app(runs) as url, playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=journey.CHROMIUM, headless=True,
                                    args=journey.BROWSER_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        try:
            seen = journey.walk(page, url, runs, shots)
            failed = journey.fail_a_run(page, runs, shots)
        finally:
            page.screenshot(path=str(shots / "last.png"), full_page=True)
            browser.close()
    # the first page: the demo's curves (drawn before any click) and its Table 1, with the report's finding
    assert "5.646 vs 5.660" in seen["overview_text"] and "demo" in seen["overview_text"]
    assert "swiglu" in seen["overview_table"] and "dual" in seen["overview_table"]
    # the launch showed its estimate first, and Curves followed the new experiment live, then final
    assert re.search(r"Estimated wall time on this machine: \d+ (s|min).* for 2 run\(s\)", seen["estimate"])
    assert seen["curves_experiment"] == journey.EXPERIMENT
    assert seen["curves_live_traces"] >= 3 and seen["curves_final_traces"] >= 6
    # Results: the new experiment's rows, numbers rounded for reading
    for variant in ("swiglu", "dual"):
        assert re.search(rf"{variant}\s+1\s", seen["results_table"]), seen["results_table"]
    assert not journey.LONG_DECIMAL.search(seen["results_table"])
    # Inspect: the new runs, coloured per token, with no click on Inspect
    assert f"{journey.EXPERIMENT}/dual-s0" in seen["inspect_text"]
    assert len(seen["inspect_colours"]) > 1
    # a diverging run: its error in the table and once as a toast
    assert "TrainingDiverged" in failed["table"]
    assert sum("journey-diverge/dual-s0 failed" in t for t in failed["toasts"]) == 1
    assert sum("journey-diverge/dual-s0 failed" in t for t in failed["toasts_later"]) <= 1
    for name in ("tab-overview", "tab-launch", "tab-curves", "tab-results", "tab-diagnostics", "tab-inspect",
                 "failed-run"):
        assert (shots / f"{name}.png").stat().st_size > 10_000
