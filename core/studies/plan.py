"""What a study runs: its experiments' names and cells, phase by phase (nothing is started here).

Experiment names (the old recipes' and ladders', unchanged, so their shipped runs stay theirs):
``<study>[-<point>]-lr<lr>`` holds every seed trained at an lr (and the short sweep too when it
runs the whole steps: then its seed-0 runs are the final ones); ``<study>[-<point>]-sweep-lr<lr>``
holds a short sweep over a fraction of the steps. Without an lr grid: ``<study>[-<point>]``.

Phases at each point, in order: the sweep (with ``[select]``: the first seed of every variant at
every lr) or the grid (without: every seed at every lr), then with ``[select]`` the final runs:
with a shared lr, every variant at the shared lr and at every variant's best lr (the old recipes:
both comparisons and the lr curve get all seeds); without, each variant at its own best lr.
"""

from dataclasses import dataclass

from core import variants
from core.config import parse_variant
from core.jobs.launch import Cell, grid
from core.studies.study import Point, Study


@dataclass(frozen=True)
class Phase:
    """One experiment's worth of cells."""

    kind: str  # "sweep", "grid" or "final"
    point: str  # the axis point's name ("" without an axis)
    lr: float | None
    experiment: str
    cells: tuple[Cell, ...]


def experiment_name(study: str, point: str, lr: float | None, sweep: bool = False) -> str:
    """E.g. ``cpu-ablation-lr0.002``, ``cpu-scaling-d96-L3-sweep-lr0.004``, ``mine-ffn_hidden=256``."""
    prefix = "-".join(part for part in (study, point) if part)
    if lr is None:
        return prefix
    return f"{prefix}{'-sweep' if sweep else ''}-lr{lr:g}"


def short_sweep(study: Study) -> bool:
    """Whether the sweep runs fewer steps than the final runs (and so has experiments of its own)."""
    return study.selects and study.fraction < 1


def sweep_experiment(study: Study, point: Point, lr: float) -> str:
    """Where the sweep's run of `lr` at `point` lives."""
    return experiment_name(study.name, point.name, lr, sweep=short_sweep(study))


def final_experiment(study: Study, point: Point, lr: float | None) -> str:
    """Where every seed at `lr` at `point` lives."""
    return experiment_name(study.name, point.name, lr)


def cells(study: Study, point: Point, labels: list[str], seeds: list[int], lr: float | None,
          steps: int | None) -> list[Cell]:
    """The grid of `labels` x `seeds` at `point` (and `lr`): the study's settings, then the point's."""
    extra = [f"train.lr={lr}"] if lr is not None else []
    found = []
    for label in labels:
        settings = [*study.overrides, *point.settings(parse_variant(label)[0]), *extra]
        found += grid(study.preset, [label], seeds, settings, steps, study.data)
    return found


def non_embedding_params(study: Study, point: Point) -> int:
    """Non-embedding parameters of the baseline at `point` (a ladder's size axis)."""
    from core.model import config_parameter_counts  # torch: only when sizes are needed

    config = cells(study, point, [variants.BASELINE], [0], None, None)[0].config
    return config_parameter_counts(config.model)["non_embedding"]


def point_steps(study: Study, point: Point) -> int | None:
    """Optimizer steps of the final runs at `point`: the study's, or tokens_per_param x the baseline's
    non-embedding parameters in batches (None: the preset's)."""
    if study.tokens_per_param is None:
        return study.steps
    train = cells(study, point, [variants.BASELINE], [0], None, None)[0].config.train
    return max(1, round(study.tokens_per_param * non_embedding_params(study, point)
                        / (train.batch_size * train.seq_len)))


def labels_at(study: Study, point: Point) -> dict[str, str]:
    """{label a run records at `point`: the study's label of its variant}. They differ when the point
    sets an FFN option (an axis over ffn_hidden makes ``swiglu`` record ``swiglu+ffn_hidden=128``)."""
    return {cells(study, point, [label], [0], None, None)[0].label: label for label in study.variants}


def first_phases(study: Study, point: Point, steps: int | None) -> list[Phase]:
    """The sweep (first seed, every lr, a fraction of the steps) or, without selection, the grid."""
    lrs = study.lrs or (None,)
    if not study.selects:
        return [Phase("grid", point.name, lr, final_experiment(study, point, lr),
                      tuple(cells(study, point, list(study.variants), list(study.seeds), lr, steps)))
                for lr in lrs]
    short = steps if steps is None or study.fraction == 1 else max(1, round(steps * study.fraction))
    return [Phase("sweep", point.name, lr, sweep_experiment(study, point, lr),
                  tuple(cells(study, point, list(study.variants), [study.seeds[0]], lr, short)))
            for lr in lrs]


def final_phases(study: Study, point: Point, steps: int | None, best: dict[str, float]) -> list[Phase]:
    """Every seed at the selected lrs (`best`: the study's variant label -> its best lr); see the
    module doc."""
    seeds = list(study.seeds[1:] if not short_sweep(study) else study.seeds)
    if not study.selects or not seeds:
        return []
    if study.shared_lr is not None:
        return [Phase("final", point.name, lr, final_experiment(study, point, lr),
                      tuple(cells(study, point, list(study.variants), seeds, lr, steps)))
                for lr in sorted({study.shared_lr, *best.values()})]
    phases = []
    for label in study.variants:
        if label in best:  # a variant with no usable sweep run has no final runs
            lr = best[label]
            phases.append(Phase("final", point.name, lr, final_experiment(study, point, lr),
                                tuple(cells(study, point, [label], seeds, lr, steps))))
    return phases
