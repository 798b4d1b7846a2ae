"""Seed aggregation for curves and the Table 1 summary.

Everything here works on plain Python data (the parsed lines of ``metrics.jsonl`` and the
``summary.json`` dict of each run) so the app, the sweep CLI and the report share one
implementation. Non-finite values (a diverged run's NaN loss) never raise: they are carried
through per-run series and left out of every mean, spread and test.

The statistics of a variant against its baseline (tests, intervals, power) come from
:func:`core.analysis.significance.compare`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from core import health, variants
from core.analysis.significance import MAX_SEEDS, compare
from core.metrics import ELAPSED, STEP, TOKENS, VAL_LOSS

X_KEYS = (STEP, TOKENS, ELAPSED)
DEFAULT_BASELINE = variants.BASELINE
COMPARISON_COLUMNS = ["ci_low", "ci_high", "boot_low", "boot_high", "p_paired", "paired_seeds", "mde",
                      "seeds_needed"]
TABLE1_COLUMNS = [
    "variant", "seeds", "val_loss_mean", "val_loss_std", "val_loss", "delta_vs_baseline",
    "p_value", *COMPARISON_COLUMNS, "peak_mem_gb", "tok_s", "params", "health",
]
# Statuses after which a run's last logged values are its final ones.
_FINISHED = {"completed"}


# ---------------------------------------------------------------------------- series


def _as_float(value: object) -> float:
    """Float of a logged value; anything unparsable (null, a string) counts as missing (NaN)."""
    if isinstance(value, bool):
        return math.nan
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan


def _check_x(x: str) -> None:
    if x not in X_KEYS:
        raise ValueError(f"x must be one of {', '.join(X_KEYS)}; got {x!r}")


def metric_series(metrics: list[dict], key: str, x: str = "step") -> tuple[np.ndarray, np.ndarray]:
    """Return ``(xs, ys)`` for the lines of one run that carry ``key``, sorted by x.

    Lines without ``key`` or without a usable x are skipped. Non-finite y values (NaN, inf, or
    an unparsable value read as NaN) are kept so callers can see where a run diverged; the
    band and summary maths ignore them.
    """
    _check_x(x)
    pairs = []
    for line in metrics:
        if key not in line:
            continue
        xv = _as_float(line.get(x))
        if math.isfinite(xv):
            pairs.append((xv, _as_float(line[key])))
    if not pairs:
        return np.zeros(0), np.zeros(0)
    xs, ys = np.array(pairs, dtype=float).T
    order = np.argsort(xs, kind="stable")  # stable: equal x keep file order, so "last" means last logged
    return xs[order], ys[order]


def ema(values: np.ndarray, alpha: float) -> np.ndarray:
    """Exponential moving average with TensorBoard's debiasing; ``alpha`` is the weight of the past.

    ``alpha = 0`` returns the values unchanged. The running average starts at 0 and is divided
    by ``1 - alpha**k`` (k = finite values seen so far) so early points are not pulled towards 0.
    Non-finite values are passed through as they are and do not enter the average.
    """
    if not 0.0 <= alpha < 1.0:
        raise ValueError(f"alpha must be in [0, 1); got {alpha!r}")
    values = np.asarray(values, dtype=float)
    out = values.copy()
    last, seen = 0.0, 0
    for i, v in enumerate(values):
        if not math.isfinite(v):
            continue
        last = alpha * last + (1.0 - alpha) * v
        seen += 1
        out[i] = last / (1.0 - alpha**seen)
    return out


# ---------------------------------------------------------------------------- bands


@dataclass
class Band:
    """Per-x aggregate over the seeds of one variant; all arrays have the same length.

    ``n`` is the number of seeds with a finite value at each point; where it is 0 the
    statistics are NaN (plots show a gap), where it is 1 ``std`` is 0.
    """

    x: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    min: np.ndarray
    max: np.ndarray
    n: np.ndarray

    def to_dict(self) -> dict:
        """JSON-friendly lists; non-finite floats become ``None`` (JSON has no NaN)."""
        fields = ("x", "mean", "std", "min", "max", "n")
        return {name: _json_list(getattr(self, name)) for name in fields}


def _json_list(arr: np.ndarray) -> list:
    if np.issubdtype(arr.dtype, np.integer):
        return [int(v) for v in arr]
    return [float(v) if math.isfinite(v) else None for v in arr]


def _empty_band(x: str) -> Band:
    xs = np.zeros(0, dtype=np.int64 if x == "step" else float)
    empty = np.zeros(0)
    return Band(xs, empty, empty.copy(), empty.copy(), empty.copy(), np.zeros(0, dtype=np.int64))


def _run_by_step(metrics: list[dict], key: str, x: str, smoothing: float) -> dict[int, tuple[float, float]]:
    """step -> (x value, y value) for one run; smoothing runs along the run's own step order."""
    steps, ys = metric_series(metrics, key, "step")
    if smoothing:
        ys = ema(ys, smoothing)
    if x == "step":
        xs = steps
    else:
        x_of = _x_by_step(metrics, key, x)
        xs = np.array([x_of.get(int(s), math.nan) for s in steps])
    # A step logged twice (e.g. around a resume) keeps its last line, like the file does.
    return {int(s): (float(xv), float(y)) for s, xv, y in zip(steps, xs, ys)}


def _x_by_step(metrics: list[dict], key: str, x: str) -> dict[int, float]:
    out = {}
    for line in metrics:
        step = _as_float(line.get("step"))
        if key in line and math.isfinite(step):
            out[int(step)] = _as_float(line.get(x))
    return out


def _masked_stats(values: np.ndarray) -> tuple[np.ndarray, ...]:
    """mean, sample std, min, max, n over axis 0, counting only finite entries."""
    mask = np.isfinite(values)
    n = mask.sum(axis=0)
    safe_n = np.maximum(n, 1)
    mean = np.where(mask, values, 0.0).sum(axis=0) / safe_n
    with np.errstate(over="ignore", invalid="ignore"):  # inf/huge entries are masked out just below
        sq = np.where(mask, (values - mean) ** 2, 0.0).sum(axis=0)
    std = np.where(n >= 2, np.sqrt(sq / np.maximum(n - 1, 1)), 0.0)
    lo = np.where(mask, values, np.inf).min(axis=0, initial=np.inf)
    hi = np.where(mask, values, -np.inf).max(axis=0, initial=-np.inf)
    none = n == 0
    mean, std, lo, hi = (np.where(none, np.nan, a) for a in (mean, std, lo, hi))
    return mean, std, lo, hi, n.astype(np.int64)


def band_over_x(xs: Sequence[float], values: Sequence[Sequence[float]]) -> Band:
    """A band over `xs` of the values at each x (e.g. the seeds' final losses at each lr);
    non-finite values are left out, as in :func:`seed_band`."""
    table = np.full((max((len(v) for v in values), default=0), len(xs)), np.nan)
    for column, at_x in enumerate(values):
        table[:len(at_x), column] = at_x
    return Band(np.asarray(xs, dtype=float), *_masked_stats(table))


def seed_band(runs_metrics: list[list[dict]], key: str, x: str = "step", smoothing: float = 0.0) -> Band:
    """Aggregate one variant's seeds of metric ``key`` into a mean/std/min/max band.

    Seeds are aligned on ``step``; every step any seed logged appears, with ``n`` the number of
    seeds holding a finite value there. For ``x`` = "tokens" or "elapsed_s" the x of a step is the
    mean of that x over the seeds that logged the step. ``smoothing`` is the ``ema`` alpha, applied
    to each seed before aggregating.
    """
    _check_x(x)
    per_run = [_run_by_step(m, key, x, smoothing) for m in runs_metrics]
    steps = sorted(set().union(*per_run)) if per_run else []
    if not steps:
        return _empty_band(x)
    xs = np.full((len(per_run), len(steps)), np.nan)
    ys = np.full_like(xs, np.nan)
    for r, table in enumerate(per_run):
        for c, step in enumerate(steps):
            if step in table:
                xs[r, c], ys[r, c] = table[step]
    mean, std, lo, hi, n = _masked_stats(ys)
    x_out = np.array(steps, dtype=np.int64) if x == "step" else _masked_stats(xs)[0]
    return Band(x_out, mean, std, lo, hi, n)


def variant_bands(
    groups: dict[str, list[list[dict]]], key: str, x: str = "step", smoothing: float = 0.0
) -> dict[str, Band]:
    """``seed_band`` for every variant of ``groups`` (variant label -> list of runs' metrics)."""
    return {variant: seed_band(runs, key, x, smoothing) for variant, runs in groups.items()}


def _finite(values: Sequence[float]) -> np.ndarray:
    arr = np.asarray([_as_float(v) for v in values], dtype=float)
    return arr[np.isfinite(arr)]


# ---------------------------------------------------------------------------- Table 1


def final_value(metrics: list[dict], key: str = VAL_LOSS) -> float | None:
    """Value of ``key`` at the run's last step that logged it (may be NaN); None if never logged."""
    _, ys = metric_series(metrics, key, "step")
    return float(ys[-1]) if len(ys) else None


def _summary_float(summary: dict, key: str) -> float:
    return _as_float(summary.get(key)) if summary else math.nan


def final_loss(run: dict) -> float:
    """A run's final val loss: its summary's, else its last logged val loss (NaN when none)."""
    loss = _summary_float(run.get("summary") or {}, "final_val_loss")
    if not math.isfinite(loss):
        last = final_value(run.get("metrics") or [], VAL_LOSS)
        loss = math.nan if last is None else last
    return loss


def _run_numbers(run: dict) -> dict:
    """Final val loss, peak memory, throughput and parameter count of one run (NaN/None if absent)."""
    summary, metrics = run.get("summary") or {}, run.get("metrics") or []
    loss = final_loss(run)
    mem = _summary_float(summary, "peak_mem_gb")
    if not math.isfinite(mem):
        mem = _finite_reduce(metric_series(metrics, "mem/peak_gb")[1], np.max)
    tok_s = _summary_float(summary, "tok_s")
    if not math.isfinite(tok_s):
        tok_s = _finite_reduce(metric_series(metrics, "throughput/tok_s")[1], np.mean)
    params = _summary_float(summary, "params_total")
    params_int = int(params) if math.isfinite(params) else None
    alarms = health.run_alarms(summary, metrics)
    return {"loss": loss, "mem": mem, "tok_s": tok_s, "params": params_int, "seed": run.get("seed"),
            "alarms": alarms}


def _finite_reduce(values: np.ndarray, fn) -> float:
    values = values[np.isfinite(values)]
    return float(fn(values)) if len(values) else math.nan


def is_final(run: dict) -> bool:
    """A run counts once it finished, or when no status is known, or its summary has the final loss."""
    status = run.get("status")
    has_final = math.isfinite(_summary_float(run.get("summary") or {}, "final_val_loss"))
    return status is None or status in _FINISHED or has_final


def _variant_order(runs: list[dict], baseline: str | None) -> tuple[list[str], str | None]:
    order = list(dict.fromkeys(str(r["variant"]) for r in runs))
    if baseline is None:
        baseline = DEFAULT_BASELINE if DEFAULT_BASELINE in order else (order[0] if order else None)
    elif baseline not in order:
        raise ValueError(f"baseline {baseline!r} is not among the variants: {', '.join(order)}")
    if baseline is not None:
        order.remove(baseline)
        order.insert(0, baseline)
    return order, baseline


def _format_loss(values: np.ndarray) -> str:
    if len(values) == 0:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{values.mean():.3f} ± {values.std(ddof=1):.3f}"


def _losses_by_seed(numbers: list[dict]) -> dict:
    """{seed: final loss} (runs without a seed keyed by their position)."""
    return {n["seed"] if n["seed"] is not None else f"#{i}": n["loss"] for i, n in enumerate(numbers)}


def _variant_row(variant: str, numbers: list[dict], base: list[dict] | None) -> dict:
    losses = _finite([n["loss"] for n in numbers])
    params = next((n["params"] for n in numbers if n["params"] is not None), None)
    comparison = compare(_losses_by_seed(numbers), _losses_by_seed(base)) if base is not None else None
    stats = comparison.to_dict() if comparison is not None else {}
    return {
        "variant": variant,
        "seeds": len(losses),
        "val_loss_mean": float(losses.mean()) if len(losses) else math.nan,
        "val_loss_std": float(losses.std(ddof=1)) if len(losses) >= 2 else math.nan,
        "val_loss": _format_loss(losses),
        "delta_vs_baseline": stats.get("delta", 0.0 if len(losses) else math.nan),
        "p_value": stats.get("p_welch", math.nan),
        **{column: stats.get(column, math.nan) for column in COMPARISON_COLUMNS},
        "peak_mem_gb": _finite_reduce(_finite([n["mem"] for n in numbers]), np.mean),
        "tok_s": _finite_reduce(_finite([n["tok_s"] for n in numbers]), np.mean),
        "params": params,
        "health": health.variant_badge([n["alarms"] for n in numbers]),
    }


def table1(runs: list[dict], baseline: str | None = None) -> pd.DataFrame:
    """The Table 1 summary: one row per variant, baseline first, then in order of first appearance.

    ``runs`` holds dicts with ``variant``, ``seed``, ``metrics`` (parsed metrics.jsonl lines),
    ``summary`` (may be empty) and optionally ``status``. A run whose status is known and not
    "completed" (still running, failed, cancelled) is left out of every column unless its summary
    already holds ``final_val_loss``: its last logged values are not final ones. Runs without a
    finite final val loss are left out of the loss columns; ``seeds`` counts those that have one.
    ``p_value`` is Welch's test of the variant's final losses against the baseline's and the
    columns of COMPARISON_COLUMNS are the rest of :class:`core.analysis.significance.Comparison` (NaN on
    the baseline row). ``params`` is an int or None.
    """
    order, baseline = _variant_order(runs, baseline)
    numbers: dict[str, list[dict]] = {v: [] for v in order}
    for run in runs:
        if is_final(run):
            numbers[str(run["variant"])].append(_run_numbers(run))
    base = numbers[baseline] if baseline is not None else None
    rows = [_variant_row(v, numbers[v], None if v == baseline else base) for v in order]
    df = pd.DataFrame(rows, columns=TABLE1_COLUMNS)
    df["params"] = pd.Series([r["params"] for r in rows], dtype=object)  # keep ints, None when unknown
    return df


# ---------------------------------------------------------------------------- text table


def _fmt_float(fmt: str):
    def fmt_value(v) -> str:
        v = _as_float(v)
        return format(v, fmt) if math.isfinite(v) else "-"

    return fmt_value


def format_p(v) -> str:
    """A p-value to 3 significant digits ('-' when undefined)."""
    v = _as_float(v)
    if not math.isfinite(v):
        return "-"
    return f"{v:.2e}" if v < 1e-3 else f"{v:.3g}"


def format_interval(low, high) -> str:
    """'[-0.0312, +0.0105]' ('-' when undefined)."""
    low, high = _as_float(low), _as_float(high)
    if not (math.isfinite(low) and math.isfinite(high)):
        return "-"
    return f"[{low:+.4f}, {high:+.4f}]"


def format_seeds(v) -> str:
    """Seeds needed: '12', or '>=100000' at the search's cap ('-' when undefined)."""
    v = _as_float(v)
    if not math.isfinite(v):
        return "-"
    return f">={MAX_SEEDS}" if v >= MAX_SEEDS else str(int(v))


def _fmt_params(v) -> str:
    v = _as_float(v)
    return f"{int(v):,}" if math.isfinite(v) else "-"


def _paired_p(row) -> str:
    seeds = _as_float(row.get("paired_seeds"))
    if not math.isfinite(seeds) or seeds < 2:
        return "-"
    return f"{format_p(row['p_paired'])} ({int(seeds)})"


# header -> cell of a table1 row, as every table of Table 1 shows it (the CLI summary, the Hub
# card, the HTML report and the app): text columns left-aligned, numbers right-aligned.
TABLE1_CELLS = {
    "variant": lambda r: str(r["variant"]),
    "seeds": lambda r: str(int(r["seeds"])),
    "val loss": lambda r: str(r["val_loss"]),
    "delta": lambda r: _fmt_float("+.4f")(r["delta_vs_baseline"]),
    "95% CI (Welch)": lambda r: format_interval(r["ci_low"], r["ci_high"]),
    "95% CI (bootstrap)": lambda r: format_interval(r["boot_low"], r["boot_high"]),
    "p (Welch)": lambda r: format_p(r["p_value"]),
    "p (paired by seed)": _paired_p,
    "MDE (80%)": lambda r: _fmt_float(".4f")(r["mde"]),
    "seeds for 80%": lambda r: format_seeds(r["seeds_needed"]),
    "peak mem GB": lambda r: _fmt_float(".2f")(r["peak_mem_gb"]),
    "tok/s": lambda r: _fmt_float(",.0f")(r["tok_s"]),
    "params": lambda r: _fmt_params(r["params"]),
    "health": lambda r: str(r.get("health") or "-"),
}
TABLE1_NOTE = ("delta = variant - baseline of the mean final val loss over seeds; 95% intervals "
               "of delta (Welch, and a percentile bootstrap over seeds); p (paired by seed) pairs "
               "the seeds both ran, which share their data order (count in brackets); MDE = the "
               "smallest delta 80% power detects at this spread and seed count; seeds for 80% = "
               "seeds per variant to detect the observed delta with 80% power; health = the alarms "
               "(core.health) its runs raised, with the layers and how many runs.")


def table1_cells(df: pd.DataFrame) -> list[dict[str, str]]:
    """The cells of a ``table1`` frame as text, one dict per row keyed by TABLE1_CELLS' headers."""
    return [{header: cell(row) for header, cell in TABLE1_CELLS.items()} for _, row in df.iterrows()]


def format_table(df: pd.DataFrame) -> str:
    """Plain-text, fixed-width rendering of a ``table1`` frame for the CLI."""
    header = list(TABLE1_CELLS)
    body = [list(cells.values()) for cells in table1_cells(df)]
    widths = [max(len(cell) for cell in col) for col in zip(header, *body)]
    left = {"variant", "val loss", "health"}

    def render(cells: list[str]) -> str:
        parts = [cell.ljust(w) if c in left else cell.rjust(w) for c, cell, w in zip(header, cells, widths)]
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([render(header), rule, *(render(r) for r in body)])
