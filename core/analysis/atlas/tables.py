"""An atlas read as tables: per vocabulary token, per unit, histograms, layer summaries, two runs compared."""

import math
import operator
from typing import Any

import numpy as np
import pandas as pd
from tokenizers import Tokenizer

from core.analysis.atlas.compute import Atlas


def _mean_std(total: np.ndarray, squares: np.ndarray, count: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and population std from sums; NaN where count is 0."""
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(count > 0, total / count, np.nan)
        var = np.where(count > 0, squares / count - mean * mean, np.nan)
    return mean, np.sqrt(np.maximum(var, 0.0))


def _decode(tokenizer: Tokenizer | None, ids: list[list[int]]) -> list[str]:
    if tokenizer is None:
        return [" ".join(map(str, row)) for row in ids]
    return tokenizer.decode_batch([[i for i in row if i >= 0] for row in ids], skip_special_tokens=False)


def token_table(atlas: Atlas, tokenizer: Tokenizer | None = None, layer: int | None = None) -> pd.DataFrame:
    """One row per vocabulary token seen (as input or target): token_id, token, count,
    loss_count, loss_mean, loss_std, and per declared per-token statistic its mean and std:
    ``<stat>_mean_L<i>`` for every layer, or ``<stat>_mean`` for the one `layer` given.
    Rows by count, most frequent first."""
    a = atlas.arrays
    seen = np.flatnonzero((a["count"] > 0) | (a["loss_count"] > 0))
    table: dict[str, Any] = {"token_id": seen, "token": _decode(tokenizer, [[i] for i in seen]),
                             "count": a["count"][seen], "loss_count": a["loss_count"][seen]}
    table["loss_mean"], table["loss_std"] = (x[seen] for x in _mean_std(a["loss_sum"], a["loss_sq"],
                                                                          a["loss_count"]))
    layers = range(atlas.layers) if layer is None else [_check_layer(atlas, layer)]
    for name in atlas.meta["stats"]:
        for i in layers:
            mean, std = _mean_std(a[f"sum__{name}"][i], a[f"sq__{name}"][i], a["count"])
            suffix = "" if layer is not None else f"_L{i}"
            table[f"{name}_mean{suffix}"], table[f"{name}_std{suffix}"] = mean[seen], std[seen]
    frame = pd.DataFrame(table)
    return frame.sort_values(["count", "token_id"], ascending=[False, True], kind="stable",
                             ignore_index=True)


def _check_layer(atlas: Atlas, layer: Any) -> int:
    return _index(layer, atlas.layers, "layer")


def _index(value: Any, size: int, what: str) -> int:
    """`value` as an index in 0..size-1: ints, numpy ints and whole floats (a UI number field
    sends 3.0); ValueError otherwise."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    try:
        index = operator.index(value) if not isinstance(value, bool) else None
    except TypeError:
        index = None
    if index is None or not 0 <= index < size:
        raise ValueError(f"{what} must be 0..{size - 1}, got {value!r:.40}")
    return index


def unit_table(atlas: Atlas, tokenizer: Tokenizer | None = None, layer: int | None = None,
               contexts: bool = True) -> pd.DataFrame | None:
    """One row per (layer, unit): active (positions), frequency, dead, always_on, max_value, and
    with `contexts` the top-k as ``top<r>_value``, ``top<r>_position``, ``top<r>_context`` (the
    context text with the token in [[ ]]). None for a variant without units."""
    if not atlas.has_units:
        return None
    a, n = atlas.arrays, atlas.meta["tokens"]
    layers = range(atlas.layers) if layer is None else [_check_layer(atlas, layer)]
    frames = [_unit_rows(a, n, i, tokenizer, contexts, atlas.meta["context"]) for i in layers]
    return pd.concat(frames, ignore_index=True)


def _unit_rows(a: dict, n: int, layer: int, tokenizer, contexts: bool, context: int) -> pd.DataFrame:
    active = a["unit_active"][layer]
    rows: dict[str, Any] = {"layer": layer, "unit": np.arange(active.size), "active": active,
                            "frequency": active / n, "dead": active == 0, "always_on": active == n,
                            "max_value": a["top_value"][layer][0]}
    if contexts:
        for rank in range(a["top_value"].shape[1]):
            rows[f"top{rank + 1}_value"] = a["top_value"][layer][rank]
            rows[f"top{rank + 1}_position"] = a["top_position"][layer][rank]
            marked = [f"{c['left']}[[{c['token']}]]{c['right']}" if c else ""
                      for c in _contexts(a, layer, rank, tokenizer, context)]
            rows[f"top{rank + 1}_context"] = marked
    return pd.DataFrame(rows)


def _contexts(a: dict, layer: int, rank: int | slice, tokenizer, context: int,
              unit: int | slice = slice(None)) -> list[dict | None]:
    """Decoded contexts (left, token, right) of top-`rank` positions (None where empty)."""
    windows = a["top_context"][layer][rank, unit].reshape(-1, 2 * context + 1)
    positions = a["top_position"][layer][rank, unit].reshape(-1)
    parts = _decode(tokenizer, [p for row in windows.tolist()
                                for p in (row[:context], row[context:context + 1], row[context + 1:])])
    out: list[dict | None] = []
    for i, position in enumerate(positions.tolist()):
        left, token, right = parts[3 * i:3 * i + 3]
        out.append({"left": left, "token": token, "right": right} if position >= 0 else None)
    return out


def unit_contexts(atlas: Atlas, layer: int, unit: int, tokenizer: Tokenizer | None = None) -> list[dict]:
    """A unit's top activating positions, strongest first: rank, value, position (in the token
    stream), left / token / right text and the context as one string."""
    if not atlas.has_units:
        raise ValueError(f"ffn={atlas.meta['ffn']} has no sparse units")
    layer, unit = _check_layer(atlas, layer), _index(unit, atlas.meta["units"], atlas.meta["unit"])
    a = atlas.arrays
    found = _contexts(a, layer, slice(None), tokenizer, atlas.meta["context"], unit)
    return [{"rank": rank + 1, "value": float(a["top_value"][layer][rank, unit]),
             "position": int(a["top_position"][layer][rank, unit]), **c,
             "text": c["left"] + c["token"] + c["right"]}
            for rank, c in enumerate(found) if c is not None]


def histograms(atlas: Atlas, layer: int) -> dict[str, dict]:
    """Per bounded per-token statistic (and ``score`` where the variant has a cut) at `layer`:
    edges [bins + 1], counts [bins], below, above (and cut: the learned threshold)."""
    _check_layer(atlas, layer)
    out = {}
    for name, info in atlas.meta["stats"].items():
        if f"hist__{name}" in atlas.arrays:
            out[name] = _hist_dict(atlas.arrays[f"hist__{name}"][layer], info["low"], info["high"])
    if "score_hist" in atlas.arrays:
        low, high = atlas.meta["score_range"]
        out["score"] = {**_hist_dict(atlas.arrays["score_hist"][layer], low, high),
                        "cut": float(atlas.arrays["cut"][layer])}
    return out


def _hist_dict(counts: np.ndarray, low: float, high: float) -> dict:
    return {"edges": np.linspace(low, high, counts.size - 1).tolist(), "counts": counts[1:-1].tolist(),
            "below": int(counts[0]), "above": int(counts[-1])}


def layer_summary(atlas: Atlas) -> list[dict]:
    """Per layer: each statistic's mean over all positions, the unit flags' fractions, the cut."""
    a, n = atlas.arrays, atlas.meta["tokens"]
    rows = []
    for layer in range(atlas.layers):
        row: dict[str, Any] = {"layer": layer}
        for name in atlas.meta["stats"]:
            row[f"{name}_mean"] = float(a[f"sum__{name}"][layer].sum() / n)
        if atlas.has_units:
            active = a["unit_active"][layer]
            row.update(unit_frequency=float(active.mean() / n), dead_frac=float((active == 0).mean()),
                       always_on_frac=float((active == n).mean()))
        if "cut" in a:
            row["cut"] = float(a["cut"][layer])
        rows.append(row)
    return rows


def mean_loss(atlas: Atlas) -> float:
    """Mean next-token loss over every position (the val loss of these windows)."""
    return float(atlas.arrays["loss_sum"].sum() / max(1, atlas.arrays["loss_count"].sum()))


def compare_summary(a: Atlas, b: Atlas) -> list[dict]:
    """Per layer and per-token statistic both runs declare: each run's mean over all positions,
    and across vocabulary tokens the count-weighted correlation of the two runs' per-token means
    (1: both route the same tokens the same way; near 0: unrelated, as a frozen random router
    against a learned one). Empty when they share no statistic (dual against SwiGLU)."""
    shared = [name for name in a.meta["stats"] if name in b.meta["stats"]]
    count = a.arrays["count"].astype(np.float64)
    rows = []
    for layer in range(min(a.layers, b.layers)):
        for name in shared:
            means = [np.divide(x.arrays[f"sum__{name}"][layer], count, out=np.zeros_like(count),
                               where=count > 0) for x in (a, b)]
            rows.append({"layer": layer, "stat": name, "mean_a": float(means[0] @ count / count.sum()),
                         "mean_b": float(means[1] @ count / count.sum()),
                         "token_correlation": _weighted_correlation(*means, count)})
    return rows


def _weighted_correlation(x: np.ndarray, y: np.ndarray, weight: np.ndarray) -> float | None:
    """Pearson correlation of x and y with weights; None where either is constant."""
    w = weight / weight.sum()
    dx, dy = x - w @ x, y - w @ y
    var_x, var_y = w @ (dx * dx), w @ (dy * dy)
    if var_x <= 1e-300 or var_y <= 1e-300:
        return None
    return float((w @ (dx * dy)) / math.sqrt(var_x * var_y))


def compare_table(a: pd.DataFrame, b: pd.DataFrame) -> pd.DataFrame:
    """Two runs' token tables (same tokens) joined on the token: token_id, token, count and
    loss_count once, every other column suffixed _a / _b (also where only one run has it), and
    ``<x>_delta`` = b - a for every mean both have."""
    keys = ["token_id", "token", "count", "loss_count"]
    a, b = (t.rename(columns={c: f"{c}_{end}" for c in t.columns if c not in keys})
            for t, end in ((a, "a"), (b, "b")))
    joined = a.merge(b, on=keys, how="outer", validate="one_to_one")
    for column in a.columns:
        base = column[:-2]
        if (base.endswith("_mean") or "_mean_L" in base) and f"{base}_b" in joined:
            joined[f"{base}_delta"] = joined[f"{base}_b"] - joined[column]
    return joined.sort_values(["count", "token_id"], ascending=[False, True], ignore_index=True)
