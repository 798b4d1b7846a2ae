"""Health alarms: faults of a router, a threshold or a layer of units that change the loss curve
only subtly, read from a run's metric lines (torch-free, so any logged run can be checked).

Each alarm has a kind, the layer it concerns, the measured value and a one-line explanation:

router_collapse   a router sends (almost) every token one way: at least ``collapse_share`` of the
                  tokens have a path weight below 0.05 (dual: ``routing/L{i}/all_dense`` or
                  ``all_sparse``), or an expert gets less than ``expert_share`` of its fair share
                  of the routing slots (moe: ``moe/L{i}/load_e{j}`` < expert_share / experts)
dead_units        more than ``dead_share`` of a layer's sparse hidden units were never active on
                  the evaluation tokens (``sparsity/L{i}/dead_frac``)
threshold_drift   theta moved by more than ``theta_drift`` (relative) over the last quarter of the
                  steps logged so far (``threshold/L{i}/theta``)
aux_blowup        the auxiliary loss is at least ``aux_share`` of the language-model loss, or
                  ``aux_growth`` times its smallest logged value (and above ``aux_floor``)

The trainer checks at each evaluation and stores the list as ``health`` in status.json and
summary.json; the limits are options with the defaults below.
"""

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields

from core.metrics import AUX_LOSS, STEP, TRAIN_LOSS, parse_key

KINDS = ("router_collapse", "dead_units", "threshold_drift", "aux_blowup")
EXPLANATIONS = {
    "router_collapse": "the router sends (almost) every token one way: the other path or expert is unused",
    "dead_units": "most sparse units never fire on the evaluation tokens: the layer's capacity is lost",
    "threshold_drift": "the learned threshold is still moving late in training: sparsity is not settled",
    "aux_blowup": "the auxiliary loss has grown large next to the language-model loss",
}


@dataclass(frozen=True)
class Limits:
    """Where each alarm fires; every field can be set from the CLI as ``health.<field>``."""

    collapse_share: float = 0.95  # share of tokens with a path weight < 0.05
    expert_share: float = 0.10  # an expert's slots as a share of its fair share (1 / experts)
    dead_share: float = 0.5  # share of a layer's sparse units never active
    theta_drift: float = 0.20  # relative change of theta over the last quarter of logged steps
    aux_share: float = 0.10  # aux loss / LM loss
    aux_growth: float = 10.0  # aux loss / its smallest logged value
    aux_floor: float = 1e-3  # below this an aux loss never counts as grown

    @classmethod
    def from_dict(cls, values: dict | None) -> "Limits":
        """Limits from a JSON dict; ValueError names an unknown or non-positive field."""
        known = {f.name for f in fields(cls)}
        for key, value in (values or {}).items():
            if key not in known:
                raise ValueError(f"unknown health limit {key!r}; known: {', '.join(sorted(known))}")
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ValueError(f"health limit {key} must be a positive number, got {value!r}")
        return cls(**{k: float(v) for k, v in (values or {}).items()})


@dataclass(frozen=True)
class Alarm:
    """One fault found in a run."""

    kind: str  # one of KINDS
    layer: int | None  # the layer it concerns (None: the whole model)
    value: float  # the measured quantity the limit was compared with
    detail: str  # one line: what was measured against which limit

    @property
    def explanation(self) -> str:
        return EXPLANATIONS[self.kind]

    def to_dict(self) -> dict:
        return {**asdict(self), "explanation": self.explanation}


def check(records: Iterable[dict], limits: Limits = Limits()) -> list[Alarm]:
    """Every alarm that the metric lines `records` (in step order) raise under `limits`."""
    records = list(records)
    layers = _last_layer_values(records)
    alarms = _collapse(layers, limits) + _dead(layers, limits) + _drift(records, limits)
    return alarms + _aux(records, limits)


def badge(alarms: list[dict] | list[Alarm]) -> str:
    """A short label of a run's alarms for tables: "" when healthy, else the kinds with layers."""
    rows = [a.to_dict() if isinstance(a, Alarm) else a for a in alarms or []]
    by_kind: dict[str, list[str]] = {}
    for row in rows:
        where = "" if row.get("layer") is None else f"L{row['layer']}"
        by_kind.setdefault(row["kind"], []).append(where)
    return "; ".join(f"{kind} {','.join(w for w in wheres if w)}".strip() for kind, wheres in by_kind.items())


def run_alarms(summary: dict | None, records: list[dict], limits: Limits = Limits()) -> list[dict]:
    """A run's alarms as dicts: those the trainer stored in its summary, else checked from its
    metric lines (runs made before the trainer stored them)."""
    stored = (summary or {}).get("health")
    if isinstance(stored, list):
        return stored
    return [alarm.to_dict() for alarm in check(records, limits)]


def variant_badge(runs: list[list[dict]]) -> str:
    """Table 1's health cell for a variant's runs: each kind raised, its layers and in how many of
    the runs, e.g. "dead_units L1,L2 (2/3)"; "ok" when no run raised any, "" without runs."""
    if not runs:
        return ""
    counts: dict[str, int] = {}
    layers: dict[str, set[int]] = {}
    for alarms in runs:
        for kind in dict.fromkeys(a["kind"] for a in alarms):
            counts[kind] = counts.get(kind, 0) + 1
        for alarm in alarms:
            if alarm.get("layer") is not None:
                layers.setdefault(alarm["kind"], set()).add(int(alarm["layer"]))
    cells = []
    for kind, count in counts.items():
        where = ",".join(f"L{layer}" for layer in sorted(layers.get(kind, ())))
        cells.append(" ".join(part for part in (kind, where, f"({count}/{len(runs)})") if part))
    return "; ".join(cells) or "ok"


def _last_layer_values(records: list[dict]) -> dict[tuple[str, int, str], float]:
    """{(group, layer, name): value} of the last line that logged per-layer metrics."""
    for record in reversed(records):
        values = {}
        for key, value in record.items():
            parsed = parse_key(key)
            if parsed and parsed.layer is not None and isinstance(value, (int, float)):
                values[(parsed.group, parsed.layer, parsed.name)] = float(value)
        if values:
            return values
    return {}


def _collapse(layers: dict, limits: Limits) -> list[Alarm]:
    alarms = []
    for (group, layer, name), value in sorted(layers.items()):
        if group == "routing" and name in ("all_dense", "all_sparse") and value >= limits.collapse_share:
            path = name.removeprefix("all_")
            alarms.append(Alarm("router_collapse", layer, value, f"{value:.1%} of tokens sent wholly to the "
                                f"{path} path (limit {limits.collapse_share:.0%})"))
    experts: dict[int, dict[str, float]] = {}
    for (group, layer, name), value in layers.items():
        if group == "moe" and name.startswith("load_e"):
            experts.setdefault(layer, {})[name.removeprefix("load_")] = value
    for layer, loads in sorted(experts.items()):
        fair = 1.0 / len(loads)
        for expert, load in sorted(loads.items()):
            if load < limits.expert_share * fair:
                detail = (f"expert {expert} gets {load:.1%} of the routing slots (fair share {fair:.0%}, "
                          f"limit {limits.expert_share:.0%} of it)")
                alarms.append(Alarm("router_collapse", layer, load, detail))
    return alarms


def _dead(layers: dict, limits: Limits) -> list[Alarm]:
    alarms = []
    for (group, layer, name), value in sorted(layers.items()):
        if (group, name) == ("sparsity", "dead_frac") and value > limits.dead_share:
            alarms.append(Alarm("dead_units", layer, value, f"{value:.0%} of the sparse units never active "
                                f"(limit {limits.dead_share:.0%})"))
    return alarms


def _drift(records: list[dict], limits: Limits) -> list[Alarm]:
    """Theta's relative change between the first and the last value logged in the last quarter."""
    history: dict[int, list[tuple[int, float]]] = {}
    for record in records:
        for key, value in record.items():
            parsed = parse_key(key)
            if parsed and (parsed.group, parsed.name) == ("threshold", "theta") and parsed.layer is not None:
                history.setdefault(parsed.layer, []).append((int(record.get(STEP, 0)), float(value)))
    alarms = []
    for layer, points in sorted(history.items()):
        end = points[-1][0]
        window = [theta for step, theta in points if step >= 0.75 * end]
        if len(window) < 2 or not all(math.isfinite(t) for t in window):
            continue
        change = abs(window[-1] - window[0]) / max(abs(window[0]), 1e-8)
        if change > limits.theta_drift:
            detail = (f"theta {window[0]:.3g} -> {window[-1]:.3g} over the last quarter ({change:.0%}, "
                      f"limit {limits.theta_drift:.0%})")
            alarms.append(Alarm("threshold_drift", layer, change, detail))
    return alarms


def _aux(records: list[dict], limits: Limits) -> list[Alarm]:
    lines = [r for r in records
             if isinstance(r.get(AUX_LOSS), (int, float)) and math.isfinite(r[AUX_LOSS])]
    if not lines:
        return []
    aux, loss = lines[-1][AUX_LOSS], lines[-1].get(TRAIN_LOSS)
    smallest = min(r[AUX_LOSS] for r in lines)
    if isinstance(loss, (int, float)) and loss > 0 and aux >= limits.aux_share * loss:
        detail = f"aux loss {aux:.3g} is {aux / loss:.0%} of the LM loss (limit {limits.aux_share:.0%})"
        return [Alarm("aux_blowup", None, aux / loss, detail)]
    if aux >= limits.aux_floor and aux >= limits.aux_growth * smallest:
        return [Alarm("aux_blowup", None, aux / max(smallest, 1e-12), f"aux loss {aux:.3g} is "
                      f"{aux / max(smallest, 1e-12):.0f}x its smallest value {smallest:.3g} "
                      f"(limit {limits.aux_growth:g}x)")]
    return []


__all__ = ["KINDS", "EXPLANATIONS", "Limits", "Alarm", "check", "badge"]
