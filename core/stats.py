"""Seed aggregation for curves and the Table 1 summary.

Everything here works on plain Python data (the parsed lines of ``metrics.jsonl`` and the
``summary.json`` dict of each run) so the app, the sweep CLI and the report share one
implementation. Non-finite values (a diverged run's NaN loss) never raise: they are carried
through per-run series and left out of every mean, spread and test.

The Student-t distribution is computed here (regularized incomplete beta by a continued
fraction) rather than taken from scipy, which is not a dependency of the project.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

X_KEYS = ("step", "tokens", "elapsed_s")
DEFAULT_BASELINE = "swiglu"
TABLE1_COLUMNS = [
    "variant", "seeds", "val_loss_mean", "val_loss_std", "val_loss", "delta_vs_baseline",
    "p_value", "peak_mem_gb", "tok_s", "params",
]
# Statuses after which a run's last logged values are its final ones.
_FINISHED = {"completed"}
# Above this many degrees of freedom Student's t is computed from the normal (see student_t_sf).
_NORMAL_DF = 1e6


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


# ---------------------------------------------------------------------------- Student t / Welch


def _beta_cf(a: float, b: float, x: float, max_iter: int = 100_000, eps: float = 1e-15) -> float:
    """Continued fraction K = 1 + d1/(1 + d2/(1 + ...)) of I_x(a, b), by modified Lentz.

    Converges fast for x < (a+1)/(a+b+2); iterations grow like sqrt(max(a, b)), hence the
    generous cap for huge degrees of freedom.
    """
    tiny = 1e-300
    f, c, d = 1.0, 1.0, 0.0
    for j in range(1, max_iter + 1):
        m = j // 2
        if j % 2:  # odd terms d_{2m+1}
            coef = -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))
        else:
            coef = m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m))
        d = 1.0 + coef * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + coef / c
        c = c if abs(c) > tiny else tiny
        delta = c * d
        f *= delta
        if abs(delta - 1.0) < eps:
            break
    return f


def _betainc(a: float, b: float, x: float, xc: float) -> float:
    """Regularized incomplete beta I_x(a, b); ``xc`` = 1 - x, passed in to keep its precision."""
    if x <= 0.0:
        return 0.0
    if xc <= 0.0:
        return 1.0
    if x > (a + 1.0) / (a + b + 2.0):  # the fraction converges slowly here: use I_x(a,b) = 1 - I_xc(b,a)
        return 1.0 - _betainc(b, a, xc, x)
    # log of whichever of x, 1 - x is the small one is exact; the other goes through log1p.
    log_x = math.log(x) if x < 0.5 else math.log1p(-xc)
    log_xc = math.log(xc) if xc < 0.5 else math.log1p(-x)
    log_front = a * log_x + b * log_xc - _log_beta(a, b)
    return math.exp(log_front) / (a * _beta_cf(a, b, x))


def _log_beta(a: float, b: float) -> float:
    """ln B(a, b) = lnG(a) + lnG(b) - lnG(a+b), without cancellation when one argument is huge."""
    big, small = max(a, b), min(a, b)
    if big < 1e4:
        return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)
    # lnG(big+small) - lnG(big) by Stirling's series: differencing two lgamma values of size
    # ~big*ln(big) would lose most digits for the df ~ 1e6+ of near-normal t-tests.
    z = big + small
    ratio = (big - 0.5) * math.log1p(small / big) + small * math.log(z) - small
    ratio += (1 / z - 1 / big) / 12 - ((1 / z) ** 3 - (1 / big) ** 3) / 360
    return math.lgamma(small) - ratio


def student_t_sf(t: float, df: float) -> float:
    """P(T > t) for Student's t with ``df`` degrees of freedom (``df`` may be ``inf``).

    Uses P(T > t) = I_{df/(df+t^2)}(df/2, 1/2) / 2 for t >= 0 and symmetry for t < 0; beyond
    1e6 degrees of freedom, the normal plus its 1/df and 1/df^2 corrections.
    NaN for NaN inputs or df <= 0.
    """
    if math.isnan(t) or math.isnan(df) or df <= 0:
        return math.nan
    if t < 0:
        return 1.0 - student_t_sf(-t, df)
    if math.isinf(t):
        return 0.0
    if df > _NORMAL_DF:
        # Expansion around the normal, good to O(1/df^3): here the continued fraction needs
        # ~sqrt(df) iterations and loses ~df * 1e-16 relative precision to the rounding of x.
        density = math.exp(-0.5 * t * t) / math.sqrt(2.0 * math.pi)
        terms = (t**3 + t) / (4.0 * df) + (3 * t**7 - 7 * t**5 - 5 * t**3 - 3 * t) / (96.0 * df * df)
        return 0.5 * math.erfc(t / math.sqrt(2.0)) + density * terms
    t2 = t * t
    return 0.5 * _betainc(df / 2.0, 0.5, df / (df + t2), t2 / (df + t2))


def _finite(values: Sequence[float]) -> np.ndarray:
    arr = np.asarray([_as_float(v) for v in values], dtype=float)
    return arr[np.isfinite(arr)]


def welch_t_test(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """Welch's unequal-variance t-test: ``(t, two-sided p)`` with Welch–Satterthwaite df.

    t = (mean(a) - mean(b)) / sqrt(var_a/n_a + var_b/n_b) with sample variances (ddof=1).
    Non-finite values are dropped first. ``(nan, nan)`` when either side has fewer than 2
    values. When both sides have zero variance the test degenerates; we take its limit:
    equal means give ``(0.0, 1.0)`` (no evidence of a difference), different means give
    ``(±inf, 0.0)`` (perfectly separated samples).
    """
    xa, xb = _finite(a), _finite(b)
    if len(xa) < 2 or len(xb) < 2:
        return math.nan, math.nan
    diff = float(xa.mean() - xb.mean())
    sa, sb = xa.var(ddof=1) / len(xa), xb.var(ddof=1) / len(xb)
    se2 = float(sa + sb)
    if se2 == 0.0:
        return (0.0, 1.0) if diff == 0.0 else (math.copysign(math.inf, diff), 0.0)
    t = diff / math.sqrt(se2)
    df = se2**2 / (sa**2 / (len(xa) - 1) + sb**2 / (len(xb) - 1))
    return t, min(1.0, 2.0 * student_t_sf(abs(t), float(df)))


# ---------------------------------------------------------------------------- Table 1


def final_value(metrics: list[dict], key: str = "val/loss") -> float | None:
    """Value of ``key`` at the run's last step that logged it (may be NaN); None if never logged."""
    _, ys = metric_series(metrics, key, "step")
    return float(ys[-1]) if len(ys) else None


def _summary_float(summary: dict, key: str) -> float:
    return _as_float(summary.get(key)) if summary else math.nan


def _run_numbers(run: dict) -> dict:
    """Final val loss, peak memory, throughput and parameter count of one run (NaN/None if absent)."""
    summary, metrics = run.get("summary") or {}, run.get("metrics") or []
    loss = _summary_float(summary, "final_val_loss")
    if not math.isfinite(loss):
        last = final_value(metrics, "val/loss")
        loss = math.nan if last is None else last
    mem = _summary_float(summary, "peak_mem_gb")
    if not math.isfinite(mem):
        mem = _finite_reduce(metric_series(metrics, "mem/peak_gb")[1], np.max)
    tok_s = _summary_float(summary, "tok_s")
    if not math.isfinite(tok_s):
        tok_s = _finite_reduce(metric_series(metrics, "throughput/tok_s")[1], np.mean)
    params = _summary_float(summary, "params_total")
    params_int = int(params) if math.isfinite(params) else None
    return {"loss": loss, "mem": mem, "tok_s": tok_s, "params": params_int}


def _finite_reduce(values: np.ndarray, fn) -> float:
    values = values[np.isfinite(values)]
    return float(fn(values)) if len(values) else math.nan


def _is_final(run: dict) -> bool:
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


def _variant_row(variant: str, numbers: list[dict], base_losses: np.ndarray | None) -> dict:
    losses = _finite([n["loss"] for n in numbers])
    params = next((n["params"] for n in numbers if n["params"] is not None), None)
    mean = float(losses.mean()) if len(losses) else math.nan
    base_mean = float(base_losses.mean()) if base_losses is not None and len(base_losses) else math.nan
    p_value = math.nan if base_losses is None else welch_t_test(losses, base_losses)[1]
    return {
        "variant": variant,
        "seeds": len(losses),
        "val_loss_mean": mean,
        "val_loss_std": float(losses.std(ddof=1)) if len(losses) >= 2 else math.nan,
        "val_loss": _format_loss(losses),
        "delta_vs_baseline": mean - base_mean,
        "p_value": p_value,
        "peak_mem_gb": _finite_reduce(_finite([n["mem"] for n in numbers]), np.mean),
        "tok_s": _finite_reduce(_finite([n["tok_s"] for n in numbers]), np.mean),
        "params": params,
    }


def table1(runs: list[dict], baseline: str | None = None) -> pd.DataFrame:
    """The Table 1 summary: one row per variant, baseline first, then in order of first appearance.

    ``runs`` holds dicts with ``variant``, ``seed``, ``metrics`` (parsed metrics.jsonl lines),
    ``summary`` (may be empty) and optionally ``status``. A run whose status is known and not
    "completed" (still running, failed, cancelled) is left out of every column unless its summary
    already holds ``final_val_loss``: its last logged values are not final ones. Runs without a
    finite final val loss are left out of the loss columns; ``seeds`` counts those that have one.
    ``p_value`` is Welch's test of the variant's final losses against the baseline's (NaN on the
    baseline row). ``params`` is an int or None.
    """
    order, baseline = _variant_order(runs, baseline)
    numbers: dict[str, list[dict]] = {v: [] for v in order}
    for run in runs:
        if _is_final(run):
            numbers[str(run["variant"])].append(_run_numbers(run))
    base_losses = _finite([n["loss"] for n in numbers[baseline]]) if baseline is not None else None
    rows = [_variant_row(v, numbers[v], None if v == baseline else base_losses) for v in order]
    if baseline is not None:
        rows[0]["delta_vs_baseline"] = rows[0]["val_loss_mean"] - rows[0]["val_loss_mean"]
    df = pd.DataFrame(rows, columns=TABLE1_COLUMNS)
    df["params"] = pd.Series([r["params"] for r in rows], dtype=object)  # keep ints, None when unknown
    return df


# ---------------------------------------------------------------------------- text table


def _fmt_float(fmt: str):
    def fmt_value(v) -> str:
        v = _as_float(v)
        return format(v, fmt) if math.isfinite(v) else "-"

    return fmt_value


def _fmt_p(v) -> str:
    v = _as_float(v)
    if not math.isfinite(v):
        return "-"
    return f"{v:.1e}" if v < 1e-3 else f"{v:.3f}"


def _fmt_params(v) -> str:
    v = _as_float(v)
    return f"{int(v):,}" if math.isfinite(v) else "-"


# column -> (header, formatter); text columns left-aligned, numbers right-aligned.
_TEXT_COLUMNS = {
    "variant": ("variant", str),
    "seeds": ("seeds", lambda v: str(int(v))),
    "val_loss": ("val loss", str),
    "delta_vs_baseline": ("delta", _fmt_float("+.4f")),
    "p_value": ("p (Welch)", _fmt_p),
    "peak_mem_gb": ("peak mem GB", _fmt_float(".2f")),
    "tok_s": ("tok/s", _fmt_float(",.0f")),
    "params": ("params", _fmt_params),
}


def format_table(df: pd.DataFrame) -> str:
    """Plain-text, fixed-width rendering of a ``table1`` frame for the CLI."""
    columns = [c for c in _TEXT_COLUMNS if c in df.columns]
    header = [_TEXT_COLUMNS[c][0] for c in columns]
    body = [[_TEXT_COLUMNS[c][1](row[c]) for c in columns] for _, row in df.iterrows()]
    widths = [max(len(cell) for cell in col) for col in zip(header, *body)]
    left = {"variant", "val_loss"}

    def render(cells: list[str]) -> str:
        parts = [cell.ljust(w) if c in left else cell.rjust(w) for c, cell, w in zip(columns, cells, widths)]
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([render(header), rule, *(render(r) for r in body)])
