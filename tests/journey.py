"""A newcomer's first hour in the app, step by step in a real browser (Playwright + Chromium).

Used by ``tests/test_app_browser.py`` (which asserts on every step) and by
``scripts/screenshots.py`` (README's screenshots come from the same journey).
"""

import re
import time
from pathlib import Path

from core.runs import Run
from core.studies.manifest import read_manifest

CHROMIUM = "/usr/bin/chromium"
BROWSER_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
EXPERIMENT = "journey"
PLOT_TRACES = ("Array.from(document.querySelectorAll('.js-plotly-plot')).filter(p => p.offsetParent)"
               ".map(p => p.querySelectorAll('.scatterlayer .trace').length).reduce((a, b) => a + b, 0)")
# The value of the visible tab's experiment picker (a dropdown's value lives in its <input>).
SHOWN_EXPERIMENT = ("(Array.from(document.querySelectorAll('input[aria-label=\"Experiment\"]'))"
                    ".find(e => e.offsetParent) || {}).value")
# Text of the visible tab's tables (a Gradio dataframe's rows live in its .table-wrap).
TABLE_TEXT = ("Array.from(document.querySelectorAll('.table-wrap')).filter(e => e.offsetParent)"
              ".map(e => e.innerText).join('\\n')")
# The visible tab's tables as [table][row][cell] texts, header row first (Gradio 6 draws the body
# as virtual [role=row] divs, and a hidden sizing <tr> that is not a row of the data).
TABLE_ROWS = ("Array.from(document.querySelectorAll('.table-wrap')).filter(e => e.offsetParent)"
              ".map(t => Array.from(t.querySelectorAll('[role=row]'))"
              ".map(r => Array.from(r.querySelectorAll('th, [role=gridcell]'))"
              ".map(c => c.innerText.trim())))")
LONG_DECIMAL = re.compile(r"\d\.\d{5,}")  # a number printed with more than 4 decimals


def visible_traces(page) -> int:
    """Plotly line traces drawn in the visible tab."""
    return page.evaluate(PLOT_TRACES)


def wait_for_traces(page, at_least: int, timeout_ms: int = 60_000) -> None:
    page.wait_for_function(f"({PLOT_TRACES}) >= {at_least}", timeout=timeout_ms)


def open_tab(page, name: str) -> None:
    page.get_by_role("tab", name=name, exact=True).click()


def wait_for_runs(root: Path, experiment: str, names: list[str], state: str, timeout_s: float = 300) -> None:
    """Block until every run of `names` has reached `state` on disk."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if all(Run.at(root, experiment, n).read_status().get("state") == state for n in names):
            return
        time.sleep(0.5)
    states = {n: Run.at(root, experiment, n).read_status().get("state") for n in names}
    raise TimeoutError(f"runs did not reach {state}: {states}")


def visible_text(page, selector: str) -> str:
    return " ".join(e.inner_text() for e in page.locator(selector).all() if e.is_visible())


def walk(page, url: str, root: Path, shots: Path, steps: int = 30) -> dict:
    """The journey of issue #18; returns what each step showed, screenshots in `shots`."""
    seen = {}
    page.goto(url)
    wait_for_traces(page, 6)  # the demo's two variants: upper, lower and mean each
    seen["overview_text"] = visible_text(page, ".prose")
    page.wait_for_function(f"({TABLE_TEXT}).includes('dual')", timeout=30_000)
    seen["overview_table"] = page.evaluate(TABLE_TEXT)
    page.screenshot(path=str(shots / "tab-overview.png"), full_page=True)

    open_tab(page, "Launch")
    page.get_by_role("textbox", name="Experiment", exact=True).fill(EXPERIMENT)
    page.get_by_label("Seeds (e.g. 0 1 2 or 0-2)").fill("0")
    # evaluate every 10 steps: the micro preset's 50 would give one point at the end
    page.get_by_label("Overrides (key=value, one per line)").fill("eval_every=10\nlog_every=5")
    steps_box = page.get_by_label("Steps", exact=True)
    steps_box.fill(str(steps))
    steps_box.press("Tab")
    # the estimate of the 2-run grid listed (the default form's 6-run one must not be what is shown)
    page.wait_for_function("/Estimated wall time.* for 2 run\\(s\\)/.test(document.body.innerText)",
                           timeout=90_000)
    seen["estimate"] = page.evaluate("document.body.innerText.match(/Estimated wall time[^\\n]*/)[0]")
    page.screenshot(path=str(shots / "tab-launch.png"), full_page=True)
    page.get_by_role("button", name="Launch", exact=True).click()
    page.wait_for_function("document.body.innerText.includes('queued 2 run(s)')", timeout=30_000)

    open_tab(page, "Curves")
    page.wait_for_function(f"({SHOWN_EXPERIMENT}) === '{EXPERIMENT}'", timeout=30_000)
    seen["curves_experiment"] = page.evaluate(SHOWN_EXPERIMENT)
    wait_for_traces(page, 3, timeout_ms=120_000)  # the first variant's band is live
    seen["curves_live_traces"] = visible_traces(page)
    page.screenshot(path=str(shots / "curves-live.png"), full_page=True)
    wait_for_runs(root, EXPERIMENT, ["swiglu-s0", "dual-s0"], "completed")
    wait_for_traces(page, 6)
    page.wait_for_timeout(2500)  # one more live tick draws the final points
    seen["curves_final_traces"] = visible_traces(page)
    page.screenshot(path=str(shots / "tab-curves.png"), full_page=True)

    open_tab(page, "Results")  # the launched grid's rows: one seed each (the demo has more)
    page.wait_for_function(f"/swiglu\\s+1\\s/.test({TABLE_TEXT}) && /dual\\s+1\\s/.test({TABLE_TEXT})",
                           timeout=30_000)
    seen["results_table"] = page.evaluate(TABLE_TEXT)
    page.screenshot(path=str(shots / "tab-results.png"), full_page=True)

    open_tab(page, "Diagnostics")
    wait_for_traces(page, 3)
    page.screenshot(path=str(shots / "tab-diagnostics.png"), full_page=True)

    open_tab(page, "Inspect")
    page.wait_for_function(f"document.body.innerText.includes('{EXPERIMENT}/') && "
                           "document.querySelectorAll('.score-token').length >= 8", timeout=60_000)
    tokens = page.locator(".score-token")
    seen["inspect_colours"] = {tokens.nth(i).evaluate("e => getComputedStyle(e).backgroundColor")
                               for i in range(8)}
    seen["inspect_text"] = visible_text(page, ".prose")
    page.screenshot(path=str(shots / "tab-inspect.png"), full_page=True)
    return seen


def fail_a_run(page, root: Path, shots: Path) -> dict:
    """Launch one dual run that diverges; return the table and toast texts it leaves."""
    open_tab(page, "Launch")
    page.get_by_role("textbox", name="Experiment", exact=True).fill(f"{EXPERIMENT}-diverge")
    page.get_by_label("swiglu", exact=True).uncheck()
    page.get_by_label("Peak lr (0 = preset's)").fill("1000000")
    page.get_by_label("Overrides (key=value, one per line)").fill("grad_clip=0\nwarmup_steps=0")
    page.get_by_label("Steps", exact=True).fill("20")
    page.get_by_label("Steps", exact=True).press("Tab")
    page.wait_for_function("!document.body.innerText.includes('Cannot launch')", timeout=10_000)
    page.get_by_role("button", name="Launch", exact=True).click()
    wait_for_runs(root, f"{EXPERIMENT}-diverge", ["dual-s0"], "failed", timeout_s=120)
    page.wait_for_function("document.body.innerText.includes('TrainingDiverged')", timeout=30_000)
    page.wait_for_function("document.querySelectorAll('.toast-body').length >= 1", timeout=30_000)
    page.screenshot(path=str(shots / "failed-run.png"), full_page=True)
    toasts = [t.inner_text() for t in page.locator(".toast-body").all()]
    page.wait_for_timeout(4500)  # two more ticks of the live table: no second toast
    return {"toasts": toasts, "toasts_later": [t.inner_text() for t in page.locator(".toast-body").all()],
            "table": page.evaluate(TABLE_TEXT)}


STUDY = "journey-study"
# Names of the traces drawn in the visible tab's plots (a plot's data lives on its element).
TRACE_NAMES = ("Array.from(document.querySelectorAll('.js-plotly-plot')).filter(p => p.offsetParent)"
               ".flatMap(p => (p.data || []).map(t => t.name || ''))")


def copy_study_runs(source: Path, root: Path, prefix: str) -> None:
    """The shipped runs of experiments `prefix`* without their weights: what a study's figures read."""
    for experiment in sorted(source.glob(f"{prefix}*")):
        for run in (r for r in experiment.iterdir() if r.is_dir()):
            target = root / experiment.name / run.name
            target.mkdir(parents=True)
            for name in ("config.json", "status.json", "summary.json", "metrics.jsonl"):
                if (run / name).exists():
                    (target / name).write_bytes((run / name).read_bytes())


def wait_for_study(root: Path, name: str, state: str, timeout_s: float = 600) -> None:
    """Block until study `name`'s driver reaches `state` on disk."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if (read_manifest(root, name) or {}).get("driver", {}).get("state") == state:
            return
        time.sleep(1)
    raise TimeoutError(f"study {name} did not reach {state}")


def studies(page, root: Path, shots: Path, steps: int = 10) -> dict:
    """Open Studies (the shipped cpu-scaling trend is drawn with no click), compose and launch a
    micro study (2 variants x 2 lrs x 2 seeds, each variant at its best lr), watch it finish and
    read its lr curve; returns what each step showed."""
    seen = {}
    open_tab(page, "Studies")
    page.wait_for_function(f"({TRACE_NAMES}).some(n => n.startsWith('dual - swiglu'))", timeout=60_000)
    seen["trend_traces"] = page.evaluate(TRACE_NAMES)
    seen["trend_text"] = visible_text(page, ".prose")
    page.screenshot(path=str(shots / "tab-studies.png"), full_page=True)
    page.get_by_text("Compose and launch a study").click()
    page.get_by_label("Study name").fill(STUDY)
    page.get_by_label("Steps per run").fill(str(steps))
    page.get_by_label("Seeds").fill("0 1")
    page.get_by_role("button", name="Preview").click()
    page.wait_for_function("/6 runs\\./.test(document.body.innerText)", timeout=30_000)
    seen["preview"] = page.evaluate("document.body.innerText.match(/6 runs\\.[^\\n]*/)[0]")
    page.get_by_role("button", name="Launch this study", exact=True).click()
    page.wait_for_function(f"document.body.innerText.includes('Study {STUDY} launched')", timeout=30_000)
    wait_for_study(root, STUDY, "completed")
    page.wait_for_function(f"({TRACE_NAMES}).filter(n => n.endsWith(': selected lr')).length == 2 && "
                           "document.body.innerText.includes('Phase: done')", timeout=60_000)
    seen["study_traces"] = page.evaluate(TRACE_NAMES)
    seen["study_text"] = visible_text(page, ".prose")
    page.screenshot(path=str(shots / "study-launched.png"), full_page=True)
    return seen


def atlas(page, url: str, shots: Path, tokens: int = 5000, unit: int = 7) -> dict:
    """Inspect's Atlas of the default pair (demo/swiglu-s0 beside demo/dual-s0) over `tokens`
    validation tokens, with the top contexts of sparse unit `unit`; returns what it showed."""
    page.goto(url)
    open_tab(page, "Inspect")
    page.wait_for_function("document.querySelectorAll('.score-token').length >= 8", timeout=60_000)
    page.get_by_text("Atlas: both runs over their validation tokens").click()
    # Tab after each number: Gradio commits a Number on blur, and a click straight after a fill
    # could send the old value (the Atlas then ran on its default 20,000 tokens)
    for label, value in (("Validation tokens", tokens), ("Unit (its top activating contexts)", unit)):
        page.get_by_label(label).fill(str(value))
        page.get_by_label(label).press("Tab")
    page.get_by_role("button", name="Compute atlas").click()
    page.wait_for_function(f"({TABLE_TEXT}).includes('dual-s0') && "
                           f"document.body.innerText.includes('{tokens:,} tokens, computed in')",
                           timeout=120_000)
    seen = {"notes": visible_text(page, ".prose"), "tables": page.evaluate(TABLE_ROWS)}
    page.mouse.move(0, 0)  # no row highlighted under the pointer in the screenshot
    page.locator("#atlas").screenshot(path=str(shots / "tab-atlas.png"))
    return seen
