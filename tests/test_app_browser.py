"""A newcomer's first hour, in a real browser: Debian's Chromium driven by Playwright (skipped
when either is missing). The journey itself is tests/journey.py, shared with the screenshots."""

import re
import shutil
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests import journey
from tests.app_server import REPO, running_app

playwright = pytest.importorskip("playwright.sync_api")
pytestmark = pytest.mark.skipif(not Path(journey.CHROMIUM).exists(), reason="needs Debian's chromium")


@contextmanager
def browser_page(shots: Path):
    """A Chromium page; whatever the test did, its last view is kept as shots/last.png."""
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=journey.CHROMIUM, headless=True,
                                    args=journey.BROWSER_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        try:
            yield page
        finally:
            page.screenshot(path=str(shots / "last.png"), full_page=True)
            browser.close()


@pytest.mark.slow
def test_first_hour_journey(micro_experiment, tmp_path):
    root, experiment, _ = micro_experiment
    runs = tmp_path / "runs"
    shutil.copytree(root / experiment, runs / "demo")  # the app opens on the demo experiment
    shots = tmp_path / "shots"
    shots.mkdir()
    with running_app(runs) as url, browser_page(shots) as page:
        seen = journey.walk(page, url, runs, shots)
        failed = journey.fail_a_run(page, runs, shots)
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


def test_atlas_view_of_the_shipped_dual_run(tmp_path):
    """Inspect's Atlas on the shipped demo/dual-s0 beside demo/swiglu-s0: the per-token table and
    the top contexts of a chosen unit of the dual path's sparse path."""
    runs = tmp_path / "runs"
    for run in ("dual-s0", "swiglu-s0"):  # the runs with weights
        shutil.copytree(REPO / "runs" / "demo" / run, runs / "demo" / run)
    shots = tmp_path / "shots"
    shots.mkdir()
    with running_app(runs) as url, browser_page(shots) as page:
        seen = journey.atlas(page, url, shots, tokens=5000, unit=7)
    assert "demo/dual-s0 (dual), layer 0" in seen["notes"] and "5,000 tokens" in seen["notes"]
    tokens, contexts = seen["tables"]
    assert tokens[0][:3] == ["token_id", "token", "count"] and "router_sparse_mean_b" in tokens[0]
    assert len(tokens) > 5 and any(row[1] == "the" for row in tokens[1:])
    # the contexts of unit 7: dual-s0's windows ranked from 1, strongest first (swiglu has no units)
    assert contexts[0][:4] == ["run", "rank", "value", "left"]
    assert [row[1] for row in contexts[1:4]] == ["1", "2", "3"] and contexts[1][0] == "demo/dual-s0"
    values = [float(row[2]) for row in contexts[1:]]
    assert values == sorted(values, reverse=True)
    assert (shots / "tab-atlas.png").stat().st_size > 10_000


@pytest.mark.slow
def test_studies_journey(tmp_path):
    """The shipped cpu-scaling trend with its intervals, then a micro study composed, launched and
    watched to the end in the browser, its lr curve with bands and each selected lr starred."""
    runs = tmp_path / "runs"
    journey.copy_study_runs(REPO / "runs", runs, "cpu-scaling")
    shots = tmp_path / "shots"
    shots.mkdir()
    with running_app(runs) as url, browser_page(shots) as page:
        page.goto(url)
        seen = journey.studies(page, runs, shots)
    assert "dual - swiglu" in seen["trend_traces"] and "Phase:" in seen["trend_text"]
    assert re.search(r"6 runs\. (Estimated wall time on this machine|Estimating the wall time)",
                     seen["preview"])
    assert sum(n.endswith(": selected lr") for n in seen["study_traces"]) == 2
    assert {"swiglu", "dual"} <= set(seen["study_traces"])
    assert "done" in seen["study_text"]
    assert (shots / "tab-studies.png").stat().st_size > 10_000
