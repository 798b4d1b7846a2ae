"""Screenshots of each app tab for the README, with Playwright and Debian's Chromium.

    python scripts/screenshots.py [--runs-dir runs] [--out docs]
"""

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from playwright.sync_api import sync_playwright  # noqa: E402

from tests.app_server import running_app  # noqa: E402

ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def capture(url: str, out: Path) -> None:
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=ARGS)
        page = browser.new_page(viewport={"width": 1300, "height": 900})
        page.goto(url)
        page.wait_for_timeout(3000)
        page.screenshot(path=str(out / "tab-launch.png"), full_page=True)
        page.get_by_role("tab", name="Curves").click()
        page.get_by_label("Per-seed lines").check()
        page.wait_for_timeout(3500)
        page.screenshot(path=str(out / "tab-curves.png"), full_page=True)
        page.get_by_role("tab", name="Results").click()
        page.wait_for_timeout(2500)
        page.screenshot(path=str(out / "tab-results.png"), full_page=True)
        page.get_by_role("tab", name="Diagnostics").click()
        page.wait_for_timeout(3500)
        page.screenshot(path=str(out / "tab-diagnostics.png"), full_page=True)
        page.get_by_role("tab", name="Inspect").click()
        page.get_by_role("button", name="Inspect", exact=True).click()
        page.wait_for_function("document.body.innerText.includes('mean loss')", timeout=60_000)
        page.wait_for_timeout(1500)
        page.screenshot(path=str(out / "tab-inspect.png"), full_page=True)
        browser.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs-dir", default=str(REPO / "runs"))
    parser.add_argument("--out", default=str(REPO / "docs"))
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with running_app(Path(args.runs_dir)) as url:
        capture(url, out)
    print(f"screenshots in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
