"""A study's results read back from its runs: best lrs, the comparisons, the trend along an axis.

Runs are found by the experiment-naming rules of core.studies.plan, so the runs the old recipes
and ladders made (no manifest) read exactly as a study's own.
"""

import math
from pathlib import Path

from core import variants
from core.analysis.stats import format_table, table1
from core.metrics import VAL_LOSS, parse_key
from core.runs import experiment_records
from core.studies import select
from core.studies.plan import final_experiment, labels_at, non_embedding_params, point_steps, sweep_experiment
from core.studies.study import Point, Study

# Diagnostics that might explain a trend along the axis: (group, name) of the dual path's probes.
# interference/cosine: the cosine of the two paths' gradients on the shared projections.
TREND_DIAGNOSTICS = (("routing", "sparse_weight"), ("sparsity", "zero_frac"), ("threshold", "theta"),
                     ("interference", "cosine"))


def study_records(study: Study, point: Point, root: Path, experiment: str) -> list[dict]:
    """The runs of `experiment`, each variant under the study's own label (see plan.labels_at)."""
    labels = labels_at(study, point)
    return [{**r, "variant": labels.get(r["variant"], r["variant"])}
            for r in experiment_records(root, experiment)]


def sweep_records(study: Study, point: Point, root: Path) -> dict[float, list[dict]]:
    """{lr: run records} of the sweep at `point` (with a full-length sweep: every seed's)."""
    return {lr: study_records(study, point, root, sweep_experiment(study, point, lr)) for lr in study.lrs}


def best_lrs(study: Study, point: Point, root: Path) -> dict[str, float]:
    """Each variant's best lr at `point` by the one rule (core.studies.select), from the first seed."""
    return select.best_lrs(sweep_records(study, point, root), study.seeds[0])


def point_records(study: Study, point: Point, root: Path) -> list[dict]:
    """The runs of `point`'s comparison: every seed of each variant at its best lr (without selection:
    at the shared lr, else every run of the point's first experiment)."""
    if not study.selects:
        lr = study.shared_lr if study.shared_lr is not None else (study.lrs or (None,))[0]
        return study_records(study, point, root, final_experiment(study, point, lr))
    found = []
    for variant, lr in best_lrs(study, point, root).items():
        found += [r for r in study_records(study, point, root, final_experiment(study, point, lr))
                  if r["variant"] == variant]
    return found


def comparison_records(study: Study, root: Path, point: Point | None = None) -> dict[str, list[dict]]:
    """Run records of the two comparisons at `point` (default: the first): at the shared lr (empty
    without one), and each variant at its best lr."""
    point = point or study.points[0]
    shared = ([] if study.shared_lr is None
              else study_records(study, point, root, final_experiment(study, point, study.shared_lr)))
    return {"shared_lr": shared, "best_lr": point_records(study, point, root)}


def _final_mean(records: list[dict], group: str, name: str) -> float:
    """Mean over runs and layers of metric `group/L*/name` at each run's last evaluation."""
    values = []
    for record in records:
        last = next((line for line in reversed(record["metrics"]) if VAL_LOSS in line), {})
        for key, value in last.items():
            parsed = parse_key(key)
            if parsed and parsed.layer is not None and (parsed.group, parsed.name) == (group, name):
                values.append(value)
    return sum(values) / len(values) if values else math.nan


def scaling_rows(study: Study, root: Path) -> list[dict]:
    """Per axis point with results: its size, each variant's lr, Table 1's comparison of each variant
    with the baseline (delta, 95% Welch and bootstrap intervals, p) and the trend diagnostics of each
    variant; ``x`` is where the point sits on the axis (its size for rungs, else the key's value)."""
    rows = []
    for point in study.points:
        found = point_records(study, point, root)
        if not any(r["variant"] == variants.BASELINE for r in found):
            continue  # nothing yet, or a point still training: no baseline to compare with
        table = table1(found, variants.BASELINE).set_index("variant")
        lrs = best_lrs(study, point, root) if study.selects else {}
        size = non_embedding_params(study, point)
        row = {"rung": point.name, "non_embedding": size, "steps": point_steps(study, point), "lrs": lrs,
               "x": size if study.axis == "rungs" else point.name.partition("=")[2],
               "x_title": "non-embedding parameters" if study.axis == "rungs" else study.axis,
               "variants": {}}
        for variant in table.index:
            runs = [r for r in found if r["variant"] == variant]
            stats = table.loc[variant]
            row["variants"][variant] = {
                "seeds": int(stats["seeds"]), "val_loss": float(stats["val_loss_mean"]),
                "delta": float(stats["delta_vs_baseline"]), "ci_low": float(stats["ci_low"]),
                "ci_high": float(stats["ci_high"]), "boot_low": float(stats["boot_low"]),
                "boot_high": float(stats["boot_high"]), "p": float(stats["p_value"]),
                "std": float(stats["val_loss_std"]),
                **{f"{g}/{n}": _final_mean(runs, g, n) for g, n in TREND_DIAGNOSTICS}}
        rows.append(row)
    return rows


def summary_text(study: Study, root: Path) -> str:
    """What the sweep CLI prints at the end: the trend along the axis, or both Table 1s."""
    return _axis_text(study, root) if study.axis else _lr_text(study, root)


def _lr_text(study: Study, root: Path) -> str:
    """Both Table 1s as text, with each variant's best lr."""
    found, parts = comparison_records(study, root), []
    if study.shared_lr is not None:
        parts.append(f"at the shared lr {study.shared_lr:g}:\n{format_table(table1(found['shared_lr']))}")
    if study.selects:
        lrs = ", ".join(f"{v} {lr:g}" for v, lr in best_lrs(study, study.points[0], root).items())
        parts.append(f"each at its best lr ({lrs}):\n{format_table(table1(found['best_lr']))}")
    else:
        parts.append(format_table(table1(found["best_lr"])))
    return "\n\n".join(parts)


def _axis_text(study: Study, root: Path) -> str:
    """One line per point and variant: size, lr, val loss and delta vs the baseline with its CI."""
    lines = [f"{'rung':10s} {'non-emb':>9s} {'variant':10s} {'lr':>7s} {'seeds':>5s} {'val loss':>9s} "
             f"{'delta':>8s}  95% CI (Welch)"]
    for row in scaling_rows(study, root):
        for variant, v in row["variants"].items():
            lr = row["lrs"].get(variant, math.nan)
            interval = f"[{v['ci_low']:+.4f}, {v['ci_high']:+.4f}]" if math.isfinite(v["ci_low"]) else "-"
            lines.append(f"{row['rung']:10s} {row['non_embedding']:>9,d} {variant:10s} {lr:>7g} "
                         f"{v['seeds']:>5d} {v['val_loss']:>9.4f} {v['delta']:>+8.4f}  {interval}")
    return "\n".join(lines)
