"""From how many steps does ``train.compile=true`` pay off on this machine? (issue #27)

    python bench/compile_payoff.py [--preset tiny] [--variants swiglu dual] [--rounds 2]
                                   [--dtypes fp32] [--threads 1] [--json PATH]

Each round times, side by side, the eager step and the compiled step of every variant and dtype
with ``python -m core.train --time-steps N`` (the calibration the Launch estimate runs). The
compiled run's warm-up step holds the compilation; its excess over a steady compiled step is the
one-off cost. The first compiled run of each shape uses a fresh inductor cache (a first run on a
new machine), later rounds the warm one (a second run of the same shape). Break-even steps =
compile seconds / (eager step - compiled step); "never" where compiling does not save time.
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def timed_steps(preset: str, variant: str, dtype: str, compiled: bool, steps: int, threads: int,
                cache: Path) -> dict:
    """One ``--time-steps`` subprocess; its JSON line."""
    command = [sys.executable, "-m", "core.train", "--preset", preset, "--ffn", variant, "--no-progress",
               "--time-steps", str(steps), "--threads", str(threads),
               "--set", f"dtype={dtype}", "--set", f"compile={str(compiled).lower()}"]
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(cache)}
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=1800)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def break_even(compile_s: float, eager_s: float, compiled_s: float) -> float | None:
    """Steps after which the compiled run has caught up with the eager one; None if never."""
    saving = eager_s - compiled_s
    return compile_s / saving if saving > 0 else None


def summarise(eager: list[dict], compiled: list[dict]) -> dict:
    """Medians over rounds; the compilation cold (first round) and warm (later rounds)."""
    eager_s = statistics.median(r["step_s"] for r in eager)
    compiled_s = statistics.median(r["step_s"] for r in compiled)
    costs = [r["first_step_s"] - r["step_s"] for r in compiled]
    cold, warm = costs[0], (statistics.median(costs[1:]) if len(costs) > 1 else None)
    return {"eager_step_s": eager_s, "compiled_step_s": compiled_s, "speedup": eager_s / compiled_s,
            "compile_cold_s": cold, "compile_warm_s": warm,
            "break_even_steps_cold": break_even(cold, eager_s, compiled_s),
            "break_even_steps_warm": None if warm is None else break_even(warm, eager_s, compiled_s)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="tiny")
    p.add_argument("--variants", nargs="+", default=["swiglu", "dual"])
    p.add_argument("--dtypes", default="fp32", help="comma-separated: fp32, bf16")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--steps", type=int, default=5, help="timed steps per measurement")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default="")
    args = p.parse_args()
    results: dict = {}
    with tempfile.TemporaryDirectory() as cache:
        for dtype in args.dtypes.split(","):
            for variant in args.variants:
                eager, compiled = [], []
                for round_ in range(args.rounds):
                    print(f"{dtype} {variant} round {round_ + 1}/{args.rounds}", file=sys.stderr, flush=True)
                    for compiled_run, out in ((False, eager), (True, compiled)):
                        out.append(timed_steps(args.preset, variant, dtype, compiled_run, args.steps,
                                               args.threads, Path(cache)))
                results.setdefault(dtype, {})[variant] = summarise(eager, compiled)
                print(json.dumps({dtype: {variant: results[dtype][variant]}}), flush=True)
    meta = {"preset": args.preset, "threads": args.threads, "rounds": args.rounds, "steps": args.steps,
            "machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
            "command": " ".join(["compile_payoff.py", *sys.argv[1:]])}
    if args.json:
        Path(args.json).write_text(json.dumps({"meta": meta, "results": results}, indent=1) + "\n")


if __name__ == "__main__":
    main()
