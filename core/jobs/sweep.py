"""Grids of variants x seeds: ``python -m core.sweep``; each run is a ``core.train`` subprocess.

Completed runs are skipped, interrupted ones resumed, so a sweep can be re-run until done.
"""

import argparse
import sys
from pathlib import Path

from core import variants
from core.analysis.stats import format_table, table1
from core.jobs.executors import (
    EXECUTORS,
    TIME_FORMATS,
    Executor,
    LocalExecutor,
    Resources,
    SlurmExecutor,
    check_slurm,
)
from core.jobs.launch import grid
from core.jobs.runner import execute, plan
from core.runs import Run, experiment_records, runs_root, slurm_folder, validate_name
from core.trackers import LOG_TO_HELP, parse_backends


def add_executor_args(p: argparse.ArgumentParser) -> None:
    """--executor and the cluster resources, for core.sweep and its studies."""
    g = p.add_argument_group("where runs execute")
    g.add_argument("--executor", choices=EXECUTORS, default="local",
                   help="local: subprocesses of this machine (--parallel at a time); slurm: one job array")
    g.add_argument("--partition", default=None, help="SLURM partition (default: the cluster's default)")
    g.add_argument("--gpus-per-run", type=int, default=0, help="GPUs per run (one rank each; local: "
                   "adjacent GPUs of this machine)")
    g.add_argument("--nodes-per-run", type=int, default=1, help="nodes per run (torchrun c10d rendezvous)")
    g.add_argument("--ranks-per-run", type=int, default=0,
                   help="training processes per run (default: one per GPU, or 1; more than one: torchrun)")
    g.add_argument("--cpus-per-rank", type=int, default=Resources.cpus_per_rank,
                   help="CPU cores and torch threads per training process (slurm)")
    g.add_argument("--time", default=Resources.time, help=f"time limit per job ({TIME_FORMATS}); a run "
                   "that outlives it checkpoints and resumes in a requeued job")


def make_executor(args: argparse.Namespace, root: Path, name: str) -> Executor:
    """The executor the flags ask for; ValueError (before anything is submitted) if it cannot run."""
    if args.executor == "local":
        if args.partition or args.nodes_per_run != 1:
            raise ValueError("--partition and --nodes-per-run need --executor slurm")
        # Several ranks: one torchrun per run, on as many adjacent GPUs of this machine.
        return LocalExecutor(args.parallel, Resources(gpus_per_run=args.gpus_per_run,
                                                      ranks_per_run=args.ranks_per_run).check())
    resources = Resources(args.partition, args.gpus_per_run, args.nodes_per_run, args.ranks_per_run,
                          args.cpus_per_rank, args.time, max(1, args.parallel))
    resources = check_slurm(resources)
    return SlurmExecutor(slurm_folder(root, name), resources, job_name=name)


def build_parser() -> argparse.ArgumentParser:
    """The sweep CLI's flags; core.studies.sweep adds --study to the same parser."""
    p = argparse.ArgumentParser(prog="python -m core.sweep", description="Run a variants x seeds grid.")
    p.add_argument("--experiment", help="experiment folder (not with --study)")
    p.add_argument("--preset", default="micro")
    p.add_argument("--ffn", nargs="*", default=[], help="plain variants, e.g. swiglu dual")
    p.add_argument("--variant", nargs="*", default=[], help="labels, e.g. dual+ffn_share=none")
    p.add_argument("--ffn-module", action="append", default=[], metavar="PATH",
                   help="a .py file registering your own FFN variant (repeatable)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--data", default=None)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--parallel", type=int, default=1, help="runs at a time (local: each gets cores/K "
                   "threads; slurm: the job array's parallelism)")
    p.add_argument("--runs-dir", default=None)
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--log-to", default="", metavar="NAMES",
                   help=f"{LOG_TO_HELP} (every run of the grid)")
    add_executor_args(p)
    return p


def prepare(args: argparse.Namespace) -> bool:
    """Load --ffn-module plugins and parse --log-to; False (after one message) when either is bad."""
    try:
        variants.load_plugins(args.ffn_module)
        args.log_to = parse_backends(args.log_to)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    """``python -m core.sweep`` for a grid (core/sweep.py adds studies through core.studies.sweep)."""
    args = build_parser().parse_args(argv)
    return run_grid(args) if prepare(args) else 2


def run_grid(args: argparse.Namespace) -> int:
    """Run the grid the parsed flags describe and wait for it; the exit code of the CLI."""
    try:
        if not args.experiment:
            raise ValueError("give --experiment (or --study)")
        validate_name(args.experiment, "experiment name")
        if args.parallel < 1:
            raise ValueError("--parallel must be >= 1")
        cells = grid(args.preset, args.ffn + args.variant, args.seeds, args.overrides, args.steps, args.data)
        root = runs_root(args.runs_dir)
        todo = plan(cells, root, args.experiment)
        executor = make_executor(args, root, args.experiment)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"{len(cells)} runs in grid, {len(cells) - len(todo)} already completed, {len(todo)} to run")
    codes = execute(todo, executor, progress=not args.no_progress, trackers=args.log_to)
    failed = sorted(name for name, code in codes.items() if code != 0)
    print(format_table(table1(experiment_records(root, args.experiment))))
    for name in failed:
        print(f"run {name} failed; see {Run.at(root, args.experiment, name).file('train.log')}",
              file=sys.stderr)
    return 1 if failed else 0
