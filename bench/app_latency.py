"""App latency: a live curves tick over 18 runs x 5,000 logged steps, and cold start to HTTP 200.

    python bench/app_latency.py

The curves tick is timed on the server-side callback (ui.service.Explorer.curves plus the
plotly figure), first on a cold watcher (reads every line once), then per tick after each run
appended 10 new lines (reads only those). Cold start runs `python app.py` on a free port.
"""

import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from core.runs import Run  # noqa: E402
from tests.app_server import running_app  # noqa: E402
from ui.figures import curves_figure  # noqa: E402
from ui.service import Explorer  # noqa: E402


def synth_experiment(root: Path, variants: int = 2, seeds: int = 9, steps: int = 5000) -> None:
    """18 runs with 5,000 metric lines each (val/loss every 10th line)."""
    for v in range(variants):
        for seed in range(seeds):
            run = Run.at(root, "bench", f"v{v}-s{seed}")
            run.write_config({"variant": f"v{v}", "seed": seed, "train": {"steps": steps}})
            lines = [json.dumps({"step": s, "tokens": s * 4096, "elapsed_s": s * 0.5,
                                 "train/loss": 8 - s / 1000 + seed * 0.01,
                                 **({"val/loss": 8 - s / 1000} if s % 10 == 0 else {})})
                     for s in range(1, steps + 1)]
            run.file("metrics.jsonl").write_text("\n".join(lines) + "\n")


def append_lines(root: Path, start: int, count: int = 10) -> None:
    for path in sorted((root / "bench").iterdir()):
        run = Run(path)
        for s in range(start, start + count):
            run.append_metrics({"step": s, "train/loss": 3.0, "val/loss": 3.0})


def tick(explorer: Explorer) -> float:
    start = time.perf_counter()
    data = explorer.curves("bench", "train/loss", "step", 0.0)
    from ui.figures import band_from_json  # the app's own JSON -> Band conversion

    curves_figure({v: band_from_json(d) for v, d in data.items()}, "train/loss")
    return time.perf_counter() - start


def bench_curves(root: Path) -> dict:
    explorer = Explorer(root, start_jobs=False)
    try:
        cold = tick(explorer)
        ticks = []
        for i in range(10):
            append_lines(root, 5001 + 10 * i)
            ticks.append(tick(explorer))
    finally:
        explorer.close()
    return {"cold_tick_s": cold, "tick_median_s": statistics.median(ticks), "tick_max_s": max(ticks)}


def bench_cold_start() -> float:
    folder = Path(tempfile.mkdtemp())
    (folder / "runs").mkdir()
    start = time.perf_counter()
    with running_app(folder / "runs", timeout=180):
        elapsed = time.perf_counter() - start
    shutil.rmtree(folder, ignore_errors=True)
    return elapsed


def main() -> int:
    root = Path(tempfile.mkdtemp()) / "runs"
    synth_experiment(root)
    result = {"runs": 18, "lines_per_run": 5000, **bench_curves(root), "cold_start_s": bench_cold_start()}
    shutil.rmtree(root.parent, ignore_errors=True)
    for key, value in result.items():
        print(f"{key:>16s}: {value:.3f}" if isinstance(value, float) else f"{key:>16s}: {value}")
    out = REPO / "bench" / "results" / "app_latency.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
