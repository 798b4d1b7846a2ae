"""``python -m core.sweep``: a grid (core.jobs.sweep) or, with ``--study NAME|PATH``, a whole study.

The study flag lives here, above both: the jobs package runs grids and knows nothing of studies.
"""

import argparse
import sys

from core.jobs import sweep
from core.runs import runs_root
from core.studies.results import summary_text
from core.studies.run import run_study
from core.studies.study import builtin_names, load_study

# Flags that describe a grid (dest -> flag). A study's file says all of this itself, so with
# --study they would be ignored: they are refused instead.
GRID_FLAGS = {"experiment": "--experiment", "preset": "--preset", "ffn": "--ffn", "variant": "--variant",
              "seeds": "--seeds", "steps": "--steps", "data": "--data", "overrides": "--set"}


def main(argv: list[str] | None = None) -> int:
    """The sweep CLI: a study when --study (or its old name --recipe) is given, else a grid."""
    parser = sweep.build_parser()
    parser.add_argument("--study", "--recipe", dest="study", default=None, metavar="NAME|PATH",
                        help=f"run a study: a built-in by name ({', '.join(builtin_names())}: "
                        "studies/*.toml) or a study file of your own; --recipe is the old name of this flag")
    args = parser.parse_args(argv)
    if not sweep.prepare(args):
        return 2
    if not args.study:
        return sweep.run_grid(args)
    given = [flag for dest, flag in GRID_FLAGS.items() if getattr(args, dest) != parser.get_default(dest)]
    if given:
        print(f"error: {', '.join(given)} describe a grid; give them or --study, not both (a study "
              "file sets its preset, variants, seeds, steps, data and overrides itself)", file=sys.stderr)
        return 2
    return run(args)


def run(args: argparse.Namespace) -> int:
    """Run the study --study names (its file read and checked before anything is written)."""
    root = runs_root(args.runs_dir)
    try:
        if args.parallel < 1:
            raise ValueError("--parallel must be >= 1")
        study = load_study(args.study)
        executor = sweep.make_executor(args, root, study.name)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    codes = run_study(study, root, executor, progress=not args.no_progress, trackers=args.log_to)
    print(summary_text(study, root))
    return 1 if any(code != 0 for code in codes.values()) else 0
