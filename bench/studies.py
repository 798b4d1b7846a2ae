"""Refresh time of the Studies tab's view of a large study (issue #25's goal: under 1 s with 200
runs x 100 evaluations on disk).

    python bench/studies.py [--runs 200] [--evals 100]

Writes a synthetic finished study under a temporary runs root (4 variants x 5 lrs x 10 seeds of
`micro`, every run with `--evals` metric lines), then times what one refresh of the tab computes
(ui.study_service: the view, the figures and Table 1): the first (cold), a refresh with nothing
changed, and a refresh after one run logged one more metric line (a live study).
"""

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from core.jobs.estimate import StepTimes  # noqa: E402
from core.jobs.launch import run_record  # noqa: E402
from core.jobs.manager import JobManager  # noqa: E402
from core.runs import Run  # noqa: E402
from core.studies.compose import from_text, save  # noqa: E402
from core.studies.plan import first_phases  # noqa: E402
from ui.service import Limits  # noqa: E402
from ui.study_service import Studies  # noqa: E402

VARIANTS = ["swiglu", "geglu", "relu2", "dual"]
LRS = [0.001, 0.002, 0.004, 0.008, 0.016]


def write_study(root: Path, seeds: int, evals: int) -> str:
    """A finished grid study of len(VARIANTS) x len(LRS) x `seeds` runs, `evals` lines each."""
    text = (f'preset = "micro"\nvariants = {json.dumps(VARIANTS)}\nseeds = {list(range(seeds))}\n'
            f"steps = {evals * 10}\nlrs = {LRS}\n")
    study = from_text("bench", text, root, max_runs=10_000)
    save(study)
    for phase in first_phases(study, study.points[0], study.steps):
        for cell in phase.cells:
            run = Run.at(root, phase.experiment, cell.name)
            run.write_config(run_record(cell.config, "cpu", 1))
            for i in range(1, evals + 1):
                run.append_metrics({"step": 10 * i, "val/loss": 6 - math.log(i) / 3,
                                    "routing/L0/sparse_weight": 0.5, "sparsity/L0/zero_frac": 0.3})
            final = 6 - math.log(evals) / 3 + 0.01 * cell.seed
            run.write_summary({"final_val_loss": final, "elapsed_s": 60.0})
            run.write_status("completed")
    return study.name


def refresh(studies: Studies, name: str) -> float:
    start = time.perf_counter()
    studies.view(name)
    studies.figures(name)
    studies.table(name)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10, help="seeds per (variant, lr): 10 gives 200 runs")
    parser.add_argument("--evals", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-studies-") as scratch:
        root = Path(scratch)
        name = write_study(root, args.seeds, args.evals)
        studies = Studies(root, JobManager(root, start=False), StepTimes(), Limits(), start=False)
        cold = refresh(studies, name)
        unchanged = min(refresh(studies, name) for _ in range(3))
        run = Run.at(root, f"{name}-lr0.004", "dual-s0")
        run.append_metrics({"step": 10 * args.evals + 1, "val/loss": 4.0})
        live = refresh(studies, name)
    runs = len(VARIANTS) * len(LRS) * args.seeds
    print(json.dumps({"runs": runs, "evals": args.evals, "cold_s": round(cold, 3),
                      "unchanged_s": round(unchanged, 3), "after_one_new_line_s": round(live, 3)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
