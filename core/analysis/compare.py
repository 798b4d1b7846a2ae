"""Runs of several experiments side by side: one final number against a config key, one group per
value of another key, seeds collapsed into mean ± std (the app's Compare tab and /compare).

A study's runs are spread over experiments named per size and lr (`cpu-scaling-d96-L3-lr0.008`);
comparing them as one set is what this module is for. It works on core.runs.experiment_records'
dicts, imports neither torch nor gradio, and every unknown key is refused with one message that
lists the valid ones.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping
from typing import Any

from core.analysis.stats import band_over_x, final_loss, final_value, is_final
from core.metrics import ELAPSED, LOSSES, STEP, TOKENS, VAL_LOSS

VARIANT = "variant"  # the run's variant label (the default colour)
EXPERIMENT = "experiment"  # the experiment a run belongs to
NON_EMBEDDING = "params.non_embedding"  # parameters outside the embedding table(s), from the summary
MISSING = "(none)"  # the colour of runs whose config lacks the colour key
# Seeds are what a band collapses, so they are never an axis or a colour.
_SEED_KEYS = {"seed", "train.seed"}
_NOT_METRICS = {STEP, TOKENS, ELAPSED}
_RECENT_LINES = 50  # metric keys are read from each run's last lines (all a run logs by the end)
Records = Mapping[str, list[dict]]  # experiment -> its runs' records


def _leaves(config: dict, prefix: str = "") -> Iterator[str]:
    """Dotted paths of the non-dict values of a nested config."""
    for name, value in config.items():
        if isinstance(value, dict):
            yield from _leaves(value, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}"


def non_embedding_params(record: dict) -> int | None:
    """Parameters of a run outside its embedding table(s): the summary's total minus
    vocab x hidden (twice when the output head is not tied); None before the summary exists."""
    total = (record.get("summary") or {}).get("params_total")
    model = (record.get("config") or {}).get("model") or {}
    vocab, hidden = model.get("vocab_size"), model.get("hidden_size")
    if not isinstance(total, (int, float)) or isinstance(total, bool) or not vocab or not hidden:
        return None
    tables = 1 if model.get("tie_word_embeddings", True) else 2
    return int(total) - tables * int(vocab) * int(hidden)


def config_keys(records: Records) -> list[str]:
    """Every key runs of `records` can be compared by: the variant, the experiment, the
    non-embedding parameter count and each dotted config path (seeds excepted)."""
    paths = {path for runs in records.values() for r in runs for path in _leaves(r.get("config") or {})}
    paths -= _SEED_KEYS | {VARIANT}
    return [VARIANT, EXPERIMENT, NON_EMBEDDING, *sorted(paths)]


def key_value(record: dict, experiment: str, key: str) -> Any:
    """The value of `key` for one run (None where its config has no such value); a list or other
    unhashable value comes back as its JSON text, so it can group runs."""
    if key == EXPERIMENT:
        return experiment
    if key == VARIANT:
        return record.get("variant")
    if key == NON_EMBEDDING:
        return non_embedding_params(record)
    value: Any = record.get("config") or {}
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    if isinstance(value, (list, dict)):
        return json.dumps(value, sort_keys=True)
    return value


def metric_keys(records: Records) -> list[str]:
    """The metrics the runs logged (losses first): what a comparison can show the last value of."""
    keys = {k for runs in records.values() for r in runs for line in (r.get("metrics") or [])[-_RECENT_LINES:]
            for k in line if k not in _NOT_METRICS}
    first = {key: i for i, key in enumerate(LOSSES)}  # val loss, then train loss, then the rest
    return sorted(keys, key=lambda k: (first.get(k, len(first)), k))


def metric_value(record: dict, metric: str) -> float:
    """A run's final val loss (its summary's) or the last value it logged of `metric`; NaN if none."""
    if metric == VAL_LOSS:
        return final_loss(record)
    value = final_value(record.get("metrics") or [], metric)
    return math.nan if value is None else value


def check_keys(records: Records, x: str, colour: str, metric: str) -> None:
    """ValueError, one message, for an x or colour key no run has or a metric no run logged."""
    keys = config_keys(records)
    for what, key in (("x", x), ("colour", colour)):
        if not isinstance(key, str) or key not in keys:
            raise ValueError(f"{what}: unknown key {str(key)[:80]!r}; the runs chosen have "
                             f"{', '.join(keys)}")
    metrics = metric_keys(records)
    if metric != VAL_LOSS and metric not in metrics:
        shown = ", ".join(metrics[:12]) + (f", ... ({len(metrics)} in all)" if len(metrics) > 12 else "")
        raise ValueError(f"metric {str(metric)[:80]!r} was not logged by the runs chosen; they log "
                         f"{shown or 'nothing yet'}")


def sort_key(value: Any) -> tuple:
    """Numbers in order, then everything else by its text (True and False count as text)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (0, float(value), "")
    return (1, 0.0, str(value))


def log_x(key: str, xs: list) -> bool:
    """Whether `key` is drawn on a log axis: an lr or a size, all of its values positive numbers."""
    name = key.rsplit(".", 1)[-1]
    scaled = name == "lr" or name.endswith("_size") or name == "ffn_hidden" or key == NON_EMBEDDING
    return scaled and bool(xs) and all(sort_key(v)[0] == 0 and v > 0 for v in xs)


def _groups(records: Records, x: str, colour: str, metric: str) -> dict[tuple, list[tuple]]:
    """{(colour value, x value): [(run id, seed, value)]} of the finished runs that have `x`."""
    groups: dict[tuple, list[tuple]] = {}
    for experiment, runs in records.items():
        for record in runs:
            at = key_value(record, experiment, x)
            if at is None or not is_final(record):  # unfinished runs have no final value yet
                continue
            shade = key_value(record, experiment, colour)
            shade = MISSING if shade is None else shade
            run_id = f"{experiment}/{record.get('name')}"
            value = metric_value(record, metric)
            groups.setdefault((shade, at), []).append((run_id, record.get("seed"), value))
    return groups


def compare_rows(records: Records, x: str, colour: str = VARIANT, metric: str = VAL_LOSS) -> list[dict]:
    """One row per (colour, x) of the finished runs of `records` that have `x`: n (runs with a
    finite value), mean, sample std (0 for one run), min, max over them, and every run's id,
    seed and value. Rows come by colour, then by x (numbers in order)."""
    check_keys(records, x, colour, metric)
    groups = _groups(records, x, colour, metric)
    rows = []
    for shade in sorted({s for s, _ in groups}, key=sort_key):
        xs = sorted((at for s, at in groups if s == shade), key=sort_key)
        members = [groups[(shade, at)] for at in xs]
        band = band_over_x(range(len(xs)), [[value for *_, value in runs] for runs in members])
        for i, (at, runs) in enumerate(zip(xs, members)):
            rows.append({"colour": str(shade), "x": at, "n": int(band.n[i]), "mean": float(band.mean[i]),
                         "std": float(band.std[i]), "min": float(band.min[i]), "max": float(band.max[i]),
                         "seeds": [seed for _, seed, _ in runs], "runs": [run for run, *_ in runs],
                         "values": [value for *_, value in runs]})
    return rows


__all__ = ["VARIANT", "EXPERIMENT", "NON_EMBEDDING", "MISSING", "compare_rows", "config_keys", "check_keys",
           "key_value", "log_x", "metric_keys", "metric_value", "non_embedding_params", "sort_key"]
