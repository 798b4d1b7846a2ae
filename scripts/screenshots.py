"""README's screenshots, taken along the first-hour journey of tests/journey.py (Playwright and
Debian's Chromium): the shipped demo, then a 1-seed `micro` grid launched, followed and inspected,
then the Studies tab (the shipped `cpu-scaling` ladder, and a `micro` study composed and run),
then Inspect's Atlas of the demo's `dual-s0` beside `swiglu-s0`.

    python scripts/screenshots.py [--runs-dir runs] [--out docs]

The journey runs on a copy of the runs folder's `demo`, so nothing is added to it.
"""

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from playwright.sync_api import sync_playwright  # noqa: E402

from tests import journey  # noqa: E402
from tests.app_server import running_app  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs-dir", default=str(REPO / "runs"))
    parser.add_argument("--out", default=str(REPO / "docs"))
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="explorer-shots-") as scratch:
        runs = Path(scratch) / "runs"
        shutil.copytree(Path(args.runs_dir) / "demo", runs / "demo")
        journey.copy_study_runs(Path(args.runs_dir), runs, "cpu-scaling")  # the Studies tab's first view
        with running_app(runs) as url, sync_playwright() as p:
            browser = p.chromium.launch(executable_path=journey.CHROMIUM, headless=True,
                                        args=journey.BROWSER_ARGS)
            page = browser.new_page(viewport={"width": 1300, "height": 900})
            journey.walk(page, url, runs, Path(scratch))
            page.goto(url)
            journey.studies(page, runs, Path(scratch))
            journey.atlas(page, url, Path(scratch))  # demo/swiglu-s0 beside demo/dual-s0
            browser.close()
        for shot in Path(scratch).glob("tab-*.png"):
            shutil.copy(shot, out / shot.name)
    print(f"screenshots in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
