"""Grids of variants x seeds: ``python -m core.sweep``; each run is a ``core.train`` subprocess.

Completed runs are skipped, interrupted ones resumed, so a sweep can be re-run until done.
"""

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from tqdm import tqdm

from core import variants
from core.config import RunConfig
from core.launch import Cell, grid, train_command, train_env
from core.runs import Run, experiment_records, runs_root, validate_name
from core.stats import format_table, table1
from core.trackers import LOG_TO_HELP, parse_backends


def plan(cells: list[Cell], root: Path, experiment: str) -> list[tuple[Cell, Run, bool]]:
    """(cell, run, resume) for the cells left to do; completed runs are skipped."""
    todo = []
    for cell in cells:
        run = Run.at(root, experiment, cell.name)
        stored = run.read_config()
        if stored is not None and RunConfig.from_dict(stored) != cell.config:
            raise ValueError(f"{run.path} holds a different config; use another --experiment")
        if run.read_status().get("state") == "completed":
            continue
        todo.append((cell, run, run.checkpoint_dir() is not None))
    return todo


def execute(todo: list[tuple[Cell, Run, bool]], parallel: int, progress: bool = True,
            trackers: tuple[str, ...] = ()) -> dict[str, int]:
    """Run the planned cells, `parallel` at a time, each mirroring its metrics to `trackers`;
    return each run's exit code."""
    threads = max(1, (os.cpu_count() or 1) // parallel)
    pending, running, codes = list(todo), {}, {}
    bar = tqdm(total=len(todo), unit="run", disable=not progress, desc="sweep")
    while pending or running:
        while pending and len(running) < parallel:
            cell, run, resume = pending.pop(0)
            log = run.open_log()  # closed when the child ends
            proc = subprocess.Popen(train_command(run, cell.flags, threads, resume, trackers),
                                    env=train_env(threads), stdout=log, stderr=subprocess.STDOUT)
            running[cell.name] = (proc, log)
        for name, (proc, log) in list(running.items()):
            if proc.poll() is not None:
                log.close()
                codes[name] = proc.returncode
                del running[name]
                bar.update(1)
        time.sleep(0.2)
    bar.close()
    return codes


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m core.sweep", description="Run a variants x seeds grid.")
    p.add_argument("--experiment", help="experiment folder (not with --recipe)")
    p.add_argument("--recipe", default=None, help="named ablation with an lr sweep (cpu-ablation, "
                   "cpu-variants, paper-ablation: core/recipes.py) or a model-size ladder (cpu-scaling, "
                   "gpu-scaling: core/ladder.py)")
    p.add_argument("--preset", default="micro")
    p.add_argument("--ffn", nargs="*", default=[], help="plain variants, e.g. swiglu dual")
    p.add_argument("--variant", nargs="*", default=[], help="labels, e.g. dual+ffn_share=none")
    p.add_argument("--ffn-module", action="append", default=[], metavar="PATH",
                   help="a .py file registering your own FFN variant (repeatable)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--data", default=None)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--parallel", type=int, default=1, help="runs at a time (each gets cores/K threads)")
    p.add_argument("--runs-dir", default=None)
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--log-to", default="", metavar="NAMES",
                   help=f"{LOG_TO_HELP} (every run of the grid)")
    args = p.parse_args(argv)
    try:
        variants.load_plugins(args.ffn_module)
        args.log_to = parse_backends(args.log_to)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.recipe:
        return _main_recipe(args)
    try:
        if not args.experiment:
            raise ValueError("give --experiment (or --recipe)")
        validate_name(args.experiment, "experiment name")
        if args.parallel < 1:
            raise ValueError("--parallel must be >= 1")
        cells = grid(args.preset, args.ffn + args.variant, args.seeds, args.overrides, args.steps, args.data)
        root = runs_root(args.runs_dir)
        todo = plan(cells, root, args.experiment)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"{len(cells)} runs in grid, {len(cells) - len(todo)} already completed, {len(todo)} to run")
    codes = execute(todo, args.parallel, progress=not args.no_progress, trackers=args.log_to)
    failed = sorted(name for name, code in codes.items() if code != 0)
    print(format_table(table1(experiment_records(root, args.experiment))))
    for name in failed:
        print(f"run {name} failed; see {Run.at(root, args.experiment, name).file('train.log')}",
              file=sys.stderr)
    return 1 if failed else 0


def _main_recipe(args: argparse.Namespace) -> int:
    from core import ladder, recipes  # both build on this module

    if args.recipe in ladder.LADDERS:
        run, summary = ladder.run_ladder, ladder.summary_text
    elif args.recipe in recipes.RECIPES:
        run, summary = recipes.run_recipe, recipes.summary_text
    else:
        names = ", ".join([*recipes.RECIPES, *ladder.LADDERS])
        print(f"error: unknown recipe {args.recipe!r}; choose one of {names}", file=sys.stderr)
        return 2
    root = runs_root(args.runs_dir)
    codes = run(args.recipe, root, max(1, args.parallel), progress=not args.no_progress, trackers=args.log_to)
    print(summary(args.recipe, root))
    return 1 if any(code != 0 for code in codes.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
