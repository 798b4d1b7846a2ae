"""What the app's Atlas view calls: JSON-friendly tables of one or two runs."""

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tokenizers import Tokenizer

from core.analysis.atlas.compute import DEFAULT_TOKENS, TOP_K, Atlas, Progress
from core.analysis.atlas.store import named_run, run_atlases
from core.analysis.atlas.tables import (
    _check_layer,
    _index,
    compare_summary,
    compare_table,
    histograms,
    layer_summary,
    mean_loss,
    token_table,
    unit_contexts,
    unit_table,
)
from core.runs import Run


def _json_rows(frame: pd.DataFrame) -> dict:
    """{"columns", "rows"} with Python scalars, NaN as None."""
    columns = [[_scalar(v) for v in frame[c].tolist()] for c in frame.columns]
    return {"columns": list(frame.columns), "rows": [list(row) for row in zip(*columns)]}


def _scalar(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value.item() if isinstance(value, np.generic) else value


def _run_block(atlas: Atlas, tokenizer: Tokenizer, layer: int, unit: int | None) -> dict:
    meta = atlas.meta
    block = {"run": meta.get("run"), "variant": meta["variant"], "layers": meta["layers"],
             "cached": meta.get("cached", False), "seconds": meta["seconds"],
             "tokens_per_s": meta["tokens_per_s"], "stats": meta["stats"],
             "layer_stats": meta["layer_stats"], "loss_mean": mean_loss(atlas),
             "summary": layer_summary(atlas)[layer], "histograms": histograms(atlas, layer),
             "unit_kind": meta["unit"], "units": None, "unit": None}
    table = unit_table(atlas, tokenizer, layer, contexts=False)
    if table is not None:
        block["units"] = _json_rows(table.drop(columns="layer"))
    if unit is not None and table is not None:  # a dense run beside a sparse one has no units
        contexts = unit_contexts(atlas, layer, unit, tokenizer)  # raises for a bad unit
        unit = _index(unit, meta["units"], meta["unit"])
        row = table.iloc[unit]
        block["unit"] = {"layer": layer, "unit": unit, "active": int(row["active"]),
                         "frequency": float(row["frequency"]), "dead": bool(row["dead"]),
                         "always_on": bool(row["always_on"]), "contexts": contexts}
    return _clean(block)


def _clean(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return _scalar(value)


def atlas_view(run: "str | Run", layer: int = 0, unit: int | None = None, *,
               compare: "str | Run | None" = None, tokens: int = DEFAULT_TOKENS, data: str = "val",
               top_k: int = TOP_K, rows: int = 200, sort: str = "count", descending: bool = True,
               min_count: int = 1, runs_dir: str | Path | None = None, device: str = "cpu",
               progress: Progress | None = None) -> dict:
    """JSON-friendly atlas of one run (or two, aligned) at one layer, for the app's Atlas view.

    Returns ``{"settings": {...}, "runs": [block, ...], "tokens": {"columns", "rows", "total",
    "shown"}, "compare": None or the layer's rows of compare_summary}``; a block holds the run's
    labels, cache flag and speed, its statistics' declarations, the layer's summary and
    histograms, its units table and, when `unit` is given, that unit's flags and top contexts.
    A run is a :class:`Run` or ``EXPERIMENT/RUN`` under the runs root (never a path: names from
    the app stay inside the root). Token rows: the `rows` first (0: all) by `sort` (a column
    name) among tokens seen at least `min_count` times. `progress(done, total)` reports
    positions while computing (a progress bar; not called when the atlases come from the
    cache). ValueError (nothing written) for bad inputs.
    """
    run, compare = (None if x is None else named_run(x, runs_dir) for x in (run, compare))
    atlases, tokenizer = run_atlases(run, tokens, data, top_k, compare, runs_dir=runs_dir, device=device,
                                     progress=progress)
    layer = min(_check_layer(a, layer) for a in atlases)  # the same for both (3.0 from a UI is 3)
    tables = [token_table(a, tokenizer, layer) for a in atlases]
    table = tables[0] if len(tables) == 1 else compare_table(*tables)
    if isinstance(rows, bool) or not isinstance(rows, int) or rows < 0:
        raise ValueError(f"rows must be an integer >= 0 (0: all), got {rows!r:.40}")
    rows = rows or len(table)
    if sort not in table.columns:
        raise ValueError(f"sort must be one of {', '.join(table.columns)}; got {sort!r:.60}")
    shown = table[table["count"] >= min_count].sort_values(sort, ascending=not descending, kind="stable")
    first = atlases[0].meta
    return {"settings": {"tokens": first["tokens"], "data": first["data"], "layer": layer, "top_k": top_k,
                         "context": first["context"], "seq_len": first["seq_len"], "sort": sort},
            "runs": [_run_block(a, tokenizer, layer, unit) for a in atlases],
            "compare": None if len(atlases) < 2 else _clean(
                [r for r in compare_summary(*atlases) if r["layer"] == layer]),
            "tokens": {**_json_rows(shown.head(rows)), "total": len(table), "shown": min(rows, len(shown))}}
