"""Named ablation recipes with a learning-rate sweep: ``python -m core.sweep --recipe NAME``.

A recipe compares its variants both at one shared learning rate and at each variant's own
best one, because a gap between the variants can be an effective-step-size effect rather than
architecture. Phase 1 trains seed 0 of every variant at every lr of the grid (one experiment per
lr, ``<recipe>-lr<lr>``); phase 2 adds the remaining seeds at the shared lr and at each variant's
best lr (lowest final val loss in phase 1). Runs resume, so a recipe can span several sittings.
"""

from dataclasses import dataclass, field
from pathlib import Path

from core.analysis.stats import format_table, table1
from core.jobs.executors import Executor, LocalExecutor
from core.jobs.launch import grid
from core.jobs.runner import execute, plan
from core.runs import experiment_records


@dataclass(frozen=True)
class Recipe:
    """A variants x seeds x lrs grid on one preset."""

    preset: str  # preset name
    steps: int  # optimizer steps per run
    lrs: tuple[float, ...]  # learning-rate grid; `shared_lr` must be one of them
    shared_lr: float  # the lr both variants are compared at
    variants: tuple[str, ...] = ("swiglu", "dual")  # variant labels
    seeds: tuple[int, ...] = (0, 1, 2)  # seeds of the final comparison
    data: str | None = None  # data source (None: the preset's)
    overrides: tuple[str, ...] = field(default_factory=tuple)  # extra key=value settings


RECIPES: dict[str, Recipe] = {
    # The report's ablation: paper preset, 400 steps of 256 x 2048 tokens on FineWeb (GPU + Hub).
    "paper-ablation": Recipe("paper", 400, (1.5e-4, 3e-4, 6e-4), 3e-4, data="fineweb"),
    # Sized for a 2-core CPU: the whole recipe (up to 14 runs with the lr sweep) in about an hour
    # (tiny at ~8k tok/s: 400 steps x 4,096 tokens ~ 4 min per run).
    "cpu-ablation": Recipe("tiny", 400, (1e-3, 2e-3, 4e-3), 2e-3),
    # Every built-in FFN on the CPU recipe's setup, with an lr grid around cpu-ablation's best
    # (4e-3, the top of its grid): 15 seed-0 runs, then 10-20 more, about 2 hours on 2 cores.
    "cpu-variants": Recipe("tiny", 400, (2e-3, 4e-3, 8e-3), 4e-3,
                           variants=("swiglu", "geglu", "relu2", "dual", "moe")),
}


def experiment_name(recipe: str, lr: float) -> str:
    """Experiment of one lr point, e.g. ``cpu-ablation-lr0.002``."""
    return f"{recipe}-lr{lr:g}"


def _run_grid(recipe: Recipe, name: str, lr: float, seeds: list[int], root: Path, executor: Executor,
              progress: bool, trackers: tuple[str, ...]) -> dict[str, int]:
    overrides = [*recipe.overrides, f"train.lr={lr}"]
    cells = grid(recipe.preset, list(recipe.variants), seeds, overrides, recipe.steps, recipe.data)
    return execute(plan(cells, root, experiment_name(name, lr)), executor, progress, trackers)


def best_lrs(name: str, root: Path) -> dict[str, float]:
    """Each variant's lr with the lowest seed-0 final val loss over the recipe's lr grid."""
    recipe, best = RECIPES[name], {}
    for lr in recipe.lrs:
        for record in experiment_records(root, experiment_name(name, lr)):
            loss = record["summary"].get("final_val_loss")
            if record["seed"] == 0 and loss is not None:
                current = best.get(record["variant"])
                if current is None or loss < current[1]:
                    best[record["variant"]] = (lr, loss)
    return {variant: lr for variant, (lr, _) in best.items()}


def run_recipe(name: str, root: Path, executor: Executor | None = None, progress: bool = True,
               trackers: tuple[str, ...] = ()) -> dict[str, int]:
    """Both phases, each run mirroring its metrics to `trackers`; returns each run's exit code
    (0 = completed). Runs on `executor` (default: this machine, one at a time)."""
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; choose one of {', '.join(RECIPES)}")
    recipe, codes = RECIPES[name], {}
    executor = executor or LocalExecutor()
    for lr in recipe.lrs:  # phase 1: seed 0 everywhere
        codes.update(_run_grid(recipe, name, lr, [recipe.seeds[0]], root, executor, progress, trackers))
    rest = list(recipe.seeds[1:])
    for lr in sorted({recipe.shared_lr, *best_lrs(name, root).values()}):  # phase 2
        codes.update(_run_grid(recipe, name, lr, rest, root, executor, progress, trackers))
    return codes


def comparison_records(name: str, root: Path) -> dict[str, list[dict]]:
    """Run records of the two comparisons: at the shared lr, and each variant at its best lr."""
    recipe = RECIPES[name]
    shared = experiment_records(root, experiment_name(name, recipe.shared_lr))
    best = []
    for variant, lr in best_lrs(name, root).items():
        best += [r for r in experiment_records(root, experiment_name(name, lr)) if r["variant"] == variant]
    return {"shared_lr": shared, "best_lr": best}


def summary_text(name: str, root: Path) -> str:
    """Both Table 1s as text, with each variant's best lr."""
    recipe, parts = RECIPES[name], []
    records = comparison_records(name, root)
    parts.append(f"at the shared lr {recipe.shared_lr:g}:\n{format_table(table1(records['shared_lr']))}")
    lrs = ", ".join(f"{v} {lr:g}" for v, lr in best_lrs(name, root).items())
    parts.append(f"each at its best lr ({lrs}):\n{format_table(table1(records['best_lr']))}")
    return "\n\n".join(parts)
