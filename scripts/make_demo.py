"""Build the shipped demo experiment (runs/demo) with the project's own CLI.

    python scripts/make_demo.py [--steps 300] [--runs-dir runs]

Trains `tiny` SwiGLU and dual x seeds 0 1 2 on the builtin corpus (a resumable sweep, so it
can be interrupted and re-run), then keeps metrics for every run and bf16 weights for seed 0
of each variant only, so the repository stays small.
"""

import argparse
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from core.runs import list_runs, runs_root  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--runs-dir", default=str(REPO / "runs"))
    parser.add_argument("--parallel", type=int, default=1)
    args = parser.parse_args()
    cmd = [sys.executable, "-m", "core.sweep", "--experiment", "demo", "--preset", "tiny",
           "--ffn", "swiglu", "dual", "--seeds", "0", "1", "2", "--steps", str(args.steps),
           "--runs-dir", args.runs_dir, "--parallel", str(args.parallel)]
    if subprocess.run(cmd, cwd=REPO).returncode != 0:
        return 1
    for run in list_runs(runs_root(args.runs_dir), "demo"):
        run.slim(keep_weights=run.name.endswith("-s0"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
