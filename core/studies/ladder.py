"""Scale trends: the same comparison on a ladder of model sizes, ``python -m core.sweep --recipe NAME``.

The report's lesson is about scale: the dual path led SwiGLU in short ablations and lost at full
scale. A ladder trains its variants on rungs of growing width and depth with the training tokens
per non-embedding parameter held fixed, so every rung is equally (under)trained. On each rung a
short sweep (seed 0, a fraction of the steps) picks each variant's best learning rate from the
ladder's grid; then every seed trains at that lr. Experiments: ``<ladder>-<rung>-sweep-lr<lr>``
(the sweep) and ``<ladder>-<rung>-lr<lr>`` (every seed of the variants whose best lr that is; a
rung's comparison takes each variant from its own). A grid extended later adds runs and never
conflicts with finished ones. Rungs run smallest first and runs resume, so a ladder can span
several sittings.
"""

import math
from dataclasses import dataclass, field
from pathlib import Path

from core import variants
from core.analysis.stats import table1
from core.jobs.executors import Executor, LocalExecutor
from core.jobs.launch import Cell, grid
from core.jobs.runner import execute, plan
from core.metrics import VAL_LOSS, parse_key
from core.runs import experiment_records


@dataclass(frozen=True)
class Rung:
    """One model size of a ladder."""

    name: str  # in experiment names, e.g. "d128-L4"
    overrides: tuple[str, ...]  # the model shape, on the ladder's preset


@dataclass(frozen=True)
class Ladder:
    """Variants x seeds on rungs of growing size, each variant at its best lr per rung."""

    preset: str  # preset of every rung (data, tokenizer, batch, sequence length)
    rungs: tuple[Rung, ...]  # smallest first
    tokens_per_param: float  # training tokens per non-embedding parameter of the baseline
    lrs: tuple[float, ...]  # learning rates of each rung's short sweep
    sweep_fraction: float = 0.25  # the short sweep's steps, as a fraction of the rung's
    variants: tuple[str, ...] = (variants.BASELINE, "dual")  # variant labels
    seeds: tuple[int, ...] = (0, 1, 2)  # seeds of each rung's comparison
    data: str | None = None  # data source (None: the preset's)
    overrides: tuple[str, ...] = field(default_factory=tuple)  # settings shared by every rung


def _shape(d: int, layers: int, heads: int, kv_heads: int) -> Rung:
    """A rung of hidden size d (SwiGLU width 4d, head size d / heads)."""
    return Rung(f"d{d}-L{layers}", (f"model.hidden_size={d}", f"model.intermediate_size={4 * d}",
                                    f"model.num_hidden_layers={layers}", f"model.num_attention_heads={heads}",
                                    f"model.num_key_value_heads={kv_heads}"))


LADDERS: dict[str, Ladder] = {
    # tiny's data and batch; rungs 0.41M-3.2M non-embedding parameters (tiny = d128-L4), 1.66
    # tokens per parameter (tiny's 400 steps). The top rung is ~8 tiny runs of compute. The builtin
    # corpus has 2.40M training tokens: d160-L5 passes over it 1.28 times, d192-L6 2.25 times.
    "cpu-scaling": Ladder("tiny", (_shape(96, 3, 3, 1), _shape(112, 4, 4, 2), _shape(128, 4, 4, 2),
                                   _shape(160, 5, 5, 1), _shape(192, 6, 6, 2)),
                          1.663, (2e-3, 4e-3, 8e-3, 1.6e-2)),
    # The report's setup (FineWeb, Qwen tokenizer, 256 x 2048 tokens a step) at 8 tokens per
    # parameter (the report's 400 steps at 26M); rungs up to twice its width: GPU-sized.
    "gpu-scaling": Ladder("paper", (_shape(256, 8, 4, 2), _shape(384, 8, 6, 2), _shape(384, 12, 6, 2),
                                    _shape(512, 12, 8, 2)), 8.076, (1.5e-4, 3e-4, 6e-4), data="fineweb"),
}


def sweep_experiment(name: str, rung: Rung, lr: float) -> str:
    return f"{name}-{rung.name}-sweep-lr{lr:g}"


def final_experiment(name: str, rung: Rung, lr: float) -> str:
    return f"{name}-{rung.name}-lr{lr:g}"


def non_embedding_params(ladder: Ladder, rung: Rung) -> int:
    """Non-embedding parameters of the baseline on `rung` (the ladder's size axis)."""
    from core.model import config_parameter_counts  # torch: only when sizes are needed

    config = _cells(ladder, rung, [variants.BASELINE], [0], [], None)[0].config
    return config_parameter_counts(config.model)["non_embedding"]


def rung_steps(ladder: Ladder, rung: Rung) -> int:
    """Optimizer steps of `rung`: tokens_per_param x its non-embedding parameters."""
    train = _cells(ladder, rung, [variants.BASELINE], [0], [], None)[0].config.train
    return max(1, round(ladder.tokens_per_param * non_embedding_params(ladder, rung)
                        / (train.batch_size * train.seq_len)))


def _cells(ladder: Ladder, rung: Rung, labels: list[str], seeds: list[int], extra: list[str],
           steps: int | None) -> list[Cell]:
    overrides = [*ladder.overrides, *rung.overrides, *extra]
    return grid(ladder.preset, labels, seeds, overrides, steps, ladder.data)


def best_lrs(name: str, rung: Rung, root: Path) -> dict[str, float]:
    """Each variant's lr with the lowest final val loss in `rung`'s short sweep."""
    best: dict[str, tuple[float, float]] = {}  # variant: (lr, loss)
    for lr in LADDERS[name].lrs:
        for record in experiment_records(root, sweep_experiment(name, rung, lr)):
            loss = record["summary"].get("final_val_loss")
            if loss is None or not math.isfinite(loss):
                continue
            if record["variant"] not in best or loss < best[record["variant"]][1]:
                best[record["variant"]] = (lr, loss)
    return {variant: lr for variant, (lr, _) in best.items()}


def run_ladder(name: str, root: Path, executor: Executor | None = None, progress: bool = True,
               trackers: tuple[str, ...] = ()) -> dict[str, int]:
    """Every rung, smallest first: its short sweep, then every seed at each variant's best lr.
    Returns each run's exit code (0 = completed). Runs on `executor` (default: this machine, one
    at a time)."""
    ladder, codes = LADDERS[name], {}
    executor = executor or LocalExecutor()
    for rung in ladder.rungs:
        steps = rung_steps(ladder, rung)
        short = max(1, round(steps * ladder.sweep_fraction))
        for lr in ladder.lrs:
            cells = _cells(ladder, rung, list(ladder.variants), [ladder.seeds[0]], [f"train.lr={lr}"], short)
            codes.update(execute(plan(cells, root, sweep_experiment(name, rung, lr)), executor, progress,
                                 trackers))
        for variant, lr in best_lrs(name, rung, root).items():
            cells = _cells(ladder, rung, [variant], list(ladder.seeds), [f"train.lr={lr}"], steps)
            codes.update(execute(plan(cells, root, final_experiment(name, rung, lr)), executor, progress,
                                 trackers))
    return codes


def rung_records(name: str, rung: Rung, root: Path) -> list[dict]:
    """The runs of `rung`'s comparison: every seed of each variant at its best lr."""
    records = []
    for variant, lr in best_lrs(name, rung, root).items():
        records += [r for r in experiment_records(root, final_experiment(name, rung, lr))
                    if r["variant"] == variant]
    return records


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


# Diagnostics that might explain a trend with size: (group, name) of the dual path's probes.
# interference/cosine: the cosine of the two paths' gradients on the shared projections.
TREND_DIAGNOSTICS = (("routing", "sparse_weight"), ("sparsity", "zero_frac"), ("threshold", "theta"),
                     ("interference", "cosine"))


def scaling_rows(name: str, root: Path) -> list[dict]:
    """Per rung with results: its size, each variant's lr, Table 1's comparison of each variant
    with the baseline (delta and 95% intervals) and the trend diagnostics of each variant."""
    ladder, rows = LADDERS[name], []
    for rung in ladder.rungs:
        records = rung_records(name, rung, root)
        if not any(r["variant"] == variants.BASELINE for r in records):
            continue  # nothing yet, or a rung still training: no baseline to compare with
        table = table1(records, variants.BASELINE).set_index("variant")
        row = {"rung": rung.name, "non_embedding": non_embedding_params(ladder, rung),
               "steps": rung_steps(ladder, rung), "lrs": best_lrs(name, rung, root), "variants": {}}
        for variant in table.index:
            runs = [r for r in records if r["variant"] == variant]
            stats = table.loc[variant]
            row["variants"][variant] = {
                "seeds": int(stats["seeds"]), "val_loss": float(stats["val_loss_mean"]),
                "delta": float(stats["delta_vs_baseline"]), "ci_low": float(stats["ci_low"]),
                "ci_high": float(stats["ci_high"]),
                **{f"{g}/{n}": _final_mean(runs, g, n) for g, n in TREND_DIAGNOSTICS}}
        rows.append(row)
    return rows


def summary_text(name: str, root: Path) -> str:
    """One line per rung and variant: size, lr, val loss and delta vs the baseline with its CI."""
    lines = [f"{'rung':10s} {'non-emb':>9s} {'variant':10s} {'lr':>7s} {'seeds':>5s} {'val loss':>9s} "
             f"{'delta':>8s}  95% CI (Welch)"]
    for row in scaling_rows(name, root):
        for variant, v in row["variants"].items():
            lr = row["lrs"].get(variant, math.nan)
            interval = f"[{v['ci_low']:+.4f}, {v['ci_high']:+.4f}]" if math.isfinite(v["ci_low"]) else "-"
            lines.append(f"{row['rung']:10s} {row['non_embedding']:>9,d} {variant:10s} {lr:>7g} "
                         f"{v['seeds']:>5d} {v['val_loss']:>9.4f} {v['delta']:>+8.4f}  {interval}")
    return "\n".join(lines)


__all__ = ["Rung", "Ladder", "LADDERS", "TREND_DIAGNOSTICS", "sweep_experiment", "final_experiment",
           "rung_records",
           "non_embedding_params", "rung_steps", "best_lrs", "run_ladder", "scaling_rows", "summary_text"]
