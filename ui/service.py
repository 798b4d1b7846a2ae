"""The app's callbacks as plain Python: JSON-friendly in, JSON-friendly out, no Gradio.

Each public method validates its inputs and raises ValueError with one clear message; the
Gradio layer turns that into a UI message. Everything that touches runs/ goes through core.
"""

import hashlib
import json
import math
import re
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from core import variants
from core.analysis.atlas import atlas_view
from core.analysis.compare import VARIANT, compare_rows, config_keys, metric_keys
from core.analysis.inspection import inspect_text
from core.analysis.report import diagnostic_keys
from core.analysis.stats import X_KEYS, metric_series, seed_band, table1
from core.config import PRESETS, apply_overrides, parse_variant, preset, variant_label
from core.jobs.estimate import StepTimes, run_seconds
from core.jobs.executors import Resources
from core.jobs.launch import grid
from core.jobs.manager import JobManager
from core.metrics import LOSSES, VAL_LOSS
from core.runs import (
    ExperimentWatcher,
    Run,
    experiment_records,
    list_experiments,
    list_runs,
    runs_root,
    validate_name,
)
from ui.study_service import Studies

MAX_TEXT_CHARS = 100_000
_NON_METRICS = {"step", "tokens", "elapsed_s"}


@dataclass(frozen=True)
class Limits:
    """Caps on what a visitor may launch (demo mode) or inspect; None = unlimited."""

    presets: tuple[str, ...] = PRESETS
    max_steps: int | None = None
    max_seeds: int = 16
    max_queue: int | None = None
    max_text_chars: int = MAX_TEXT_CHARS
    locked: bool = False  # only builtin data and the preset's model size, batch and data settings

    def describe(self) -> str:
        parts = [f"presets {', '.join(self.presets)}", f"at most {self.max_seeds} seeds"]
        if self.locked:
            parts.append("builtin data, preset model size and batch (FFN options, lr and schedule free)")
        if self.max_steps:
            parts.append(f"at most {self.max_steps} steps")
        if self.max_queue:
            parts.append(f"at most {self.max_queue} queued runs")
        return "; ".join(parts) + f"; inspection text up to {self.max_text_chars:,} characters"


def parse_seeds(text: str | list | int, max_seeds: int = 16) -> list[int]:
    """Seeds from '0 1 2', '0,1,2', '0-2' or a list; at least one, each a non-negative int."""
    if isinstance(text, int) and not isinstance(text, bool):
        text = [text]
    items = text if isinstance(text, list) else re.split(r"[\s,]+", str(text or "").strip())
    seeds: list[int] = []
    for item in (i for i in items if str(i).strip() != ""):
        match = re.fullmatch(r"(\d{1,6})(?:-(\d{1,6}))?", str(item).strip())
        if not match:
            raise ValueError(f"seeds: {str(item)[:40]!r} is not a non-negative integer or a range like 0-2")
        lo, hi = int(match[1]), int(match[2] or match[1])
        seeds.extend(range(lo, hi + 1))
    seeds = list(dict.fromkeys(seeds))
    if not seeds:
        raise ValueError("choose at least one seed")
    if len(seeds) > max_seeds:
        raise ValueError(f"at most {max_seeds} seeds per launch, got {len(seeds)}")
    return seeds


def parse_overrides(text: str | list | None) -> list[str]:
    """`key=value` overrides, one per line (or a list); blank lines and # comments ignored."""
    items = text if isinstance(text, list) else str(text or "").splitlines()
    out = []
    for item in items:
        item = str(item).strip()
        if item and not item.startswith("#"):
            if "=" not in item:
                raise ValueError(f"override {item[:60]!r} is not key=value")
            out.append(item)
    return out


# The Inspect tab's atlas: its default token count (about 6 s a run here, then cached) and its cap
# (the CLI's default, 100,000, takes about 35 s a run on 2 cores).
ATLAS_TOKENS = 20_000
ATLAS_MAX_TOKENS = 100_000


def _whole_number(value) -> int | None:
    """A whole number from a UI/API field (Gradio numbers arrive as floats); None when the value
    is not one (inf, NaN, 2.5, a bool, a list)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().isdecimal():
        return int(value.strip())
    return None


def _whole_steps(value) -> int | None:
    """Steps from a UI/API field: None, "" or 0 mean the preset's; else a whole number >= 1."""
    if value in (None, "", 0):
        return None
    steps = _whole_number(value)
    if steps is None or steps < 1:
        raise ValueError(f"steps must be at least 1 (a whole number), got {str(value)[:40]!r}")
    return steps


_RESOURCE_NUMBERS = ("gpus_per_run", "nodes_per_run", "ranks_per_run", "cpus_per_rank")


def cluster_resources(fields: dict | None) -> Resources:
    """Resources from the Launch tab's or the API's fields (missing ones: the defaults), checked
    for consistency; ValueError names the bad field."""
    fields = dict(fields or {})
    unknown = sorted(set(fields) - {*_RESOURCE_NUMBERS, "partition", "time"})
    if unknown:
        raise ValueError(f"unknown cluster resource {unknown[0]!r}")
    values = {}
    for name in _RESOURCE_NUMBERS:
        value = fields.get(name)
        if value is None or value == "":
            continue
        number = _whole_number(value)
        if number is None:
            raise ValueError(f"{name.replace('_', ' ')} must be a whole number, got {value!r}")
        values[name] = number
    partition = str(fields.get("partition") or "").strip() or None
    time_limit = str(fields.get("time") or "").strip() or Resources.time
    return Resources(partition=partition, time=time_limit, **values).check()


def _lr_override(value) -> list[str]:
    """The `train.lr=...` override of a UI/API field (None, "" or 0: the preset's)."""
    if value in (None, "", 0):
        return []
    try:
        return [f"train.lr={float(value)}"]
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"lr must be a number, got {str(value)[:40]!r}") from None


def variant_choice(ffn: str, options: dict | None = None, hidden: int | None = None,
                   match: str = "width") -> str:
    """The variant label of FFN `ffn` with these options (defaults omitted); ValueError naming
    the option when one is invalid."""
    overrides = [f"model.ffn={ffn}", f"model.ffn_match={match}"]
    overrides += [f"model.{name}={json.dumps(value)}" for name, value in (options or {}).items()]
    if hidden:
        overrides.append(f"model.ffn_hidden={int(hidden)}")
    return variant_label(apply_overrides(preset("micro"), overrides).model)



def variant_labels(picked: list[str] | None, fields: dict[str, list]) -> list[str]:
    """Variant labels of the `picked` variants, from each variant's form values
    `{variant: [hidden, match, *options in their declared order]}`; the forms of variants not
    picked are ignored (the Launch tab keeps every form, picked or not)."""
    labels = []
    for name, (hidden, match, *options) in fields.items():
        if name in (picked or []):
            names = [option.name for option in variants.spec(name).options]
            labels.append(variant_choice(name, dict(zip(names, options)), int(hidden or 0), match))
    return labels


def plan_key(cells: list) -> str:
    """A short key of a grid: its runs' names and full configs (an override that changes a run's
    cost but not its name changes the key too)."""
    text = json.dumps([[cell.name, cell.config.to_dict()] for cell in cells], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def failures(rows: list[dict], seen: list[str] | None) -> tuple[dict[str, str], list[str]]:
    """The failed runs of a status table: ({run: error} of those not in `seen`, to announce once;
    every failed run, the next `seen`). None for `seen` means the table was never read, so no
    failure is new (an app restarted on old failures does not announce them again)."""
    failed = {r["run"]: r["error"] for r in rows if r["state"].startswith("failed")}
    new = {run: error for run, error in failed.items() if seen is not None and run not in seen}
    return new, sorted(failed)


def _variant_of(run_id: str) -> str:
    """'exp/dual-s0' -> 'dual' (a run's folder is its variant label and seed)."""
    return run_id.split("/")[-1].rsplit("-s", 1)[0]


def run_pair(run_ids: list[str]) -> tuple[str | None, str | None]:
    """Default runs to compare: the first baseline run and the first run of another variant."""
    first = next((r for r in run_ids if f"/{variants.BASELINE}" in r), run_ids[0] if run_ids else None)
    other = _variant_of(first or "")
    second = next((r for r in run_ids if r != first and _variant_of(r) != other), None)
    return first, second


def followed_runs(run_ids: list[str], a: str | None, b: str | None,
                  experiment: str | None) -> tuple[str | None, str | None]:
    """Runs to inspect after `experiment` was launched: a pair of its runs once some have weights,
    unless run A already is one of them (then the user's choice stands); else (a, b)."""
    mine = [r for r in run_ids if experiment and r.startswith(f"{experiment}/")]
    if mine and not str(a or "").startswith(f"{experiment}/"):
        return run_pair(mine)
    return a, b

# What a locked (demo) launch may change: the FFN variant and its options, and optimisation
# settings that do not change the cost of a step. Everything else must stay as the preset has it.
_FREE_TRAIN = {"lr", "min_lr_ratio", "warmup_steps", "weight_decay", "beta1", "beta2", "grad_clip",
               "eval_every", "log_every", "checkpoint_every", "seed", "steps"}


def _check_locked(config, base) -> None:
    """Refuse changes to model size, batch, device or data in a locked (demo) setting."""
    changed = [f"data.{k}" for k, v in vars(config.data).items() if getattr(base.data, k) != v]
    changed += [f"train.{k}" for k, v in vars(config.train).items()
                if k not in _FREE_TRAIN and getattr(base.train, k) != v]
    changed += [f"model.{k}" for k, v in vars(config.model).items()
                if not k.startswith("ffn") and getattr(base.model, k) != v]
    if config.model.ffn_hidden > 4 * base.model.intermediate_size:
        changed.append("model.ffn_hidden (at most 4x the preset's FFN width)")
    if changed:
        raise ValueError(f"not changeable here: {', '.join(changed)}")


def clean(value):
    """NaN/inf -> None, numpy scalars -> Python, recursively: strict JSON for API clients."""
    if isinstance(value, dict):
        return {k: clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class Explorer:
    """State shared by every browser session: the runs root, the job queue and metric watchers."""

    def __init__(self, root: str | Path | None = None, limits: Limits | None = None,
                 max_concurrent: int | None = None, start_jobs: bool = True,
                 executors: tuple[str, ...] = ("local",), default_executor: str = "local"):
        self.root = runs_root(root)
        self.limits = limits or Limits()
        self.executors = executors  # where launch() may run a grid
        self.default_executor = default_executor  # the Launch tab's first choice
        self.jobs = JobManager(self.root, max_concurrent=max_concurrent, start=start_jobs)
        self._watchers: dict[str, ExperimentWatcher] = {}
        self._lock = threading.Lock()
        self.step_times = StepTimes()
        self.studies = Studies(self.root, self.jobs, self.step_times, self.limits, start=start_jobs,
                               check_cells=self.check_cells)

    # listings ------------------------------------------------------------------------------------
    def experiments(self) -> list[str]:
        return list_experiments(self.root)

    def run_ids(self) -> list[str]:
        """Every run with weights, as 'experiment/run' (what Inspect can open)."""
        return [f"{e}/{r.name}" for e in self.experiments() for r in list_runs(self.root, e)
                if r.file("model.safetensors").exists()]

    def _watcher(self, experiment: str) -> ExperimentWatcher:
        validate_name(experiment, "experiment name")
        with self._lock:
            if experiment not in self._watchers:
                self._watchers[experiment] = ExperimentWatcher(self.root, experiment)
            return self._watchers[experiment]

    def _polled(self, experiment: str) -> dict[str, dict]:
        watcher = self._watcher(experiment)
        with self._lock:  # one poll at a time per watcher: cursors must advance once
            return watcher.poll()

    def metric_keys(self, experiment: str) -> list[str]:
        keys: set[str] = set()
        for info in self._polled(experiment).values():
            for record in info["metrics"][-50:]:
                keys.update(k for k in record if k not in _NON_METRICS)
        return sorted(keys, key=lambda k: (k not in LOSSES, k))

    def variants(self) -> list[dict]:
        """Every registered FFN variant: name, summary, its options (with defaults, choices and
        help) and the statistics it reports; plugins show their file."""
        out = []
        for name in variants.names():
            spec = variants.spec(name)
            out.append({"name": name, "summary": spec.summary, "source": spec.source,
                        "options": [{"name": o.name, "default": o.default, "help": o.help,
                                     "choices": list(o.choices), "minimum": o.minimum} for o in spec.options],
                        "stats": [{"name": s.name, "meaning": s.meaning, "per": s.per} for s in spec.stats]})
        return clean(out)

    # launch --------------------------------------------------------------------------------------
    def plan(self, experiment: str, preset_name: str, variants: list[str], seeds, steps: int | None = None,
             lr: float | None = None, data: str | None = None, overrides=None) -> list[dict]:
        """Validate a launch and return the grid it would queue (nothing is written)."""
        return self.planned(experiment, preset_name, variants, seeds, steps, lr, data, overrides)["runs"]

    def planned(self, experiment: str, preset_name: str, variants: list[str], seeds,
                steps: int | None = None, lr: float | None = None, data: str | None = None,
                overrides=None) -> dict:
        """The grid a launch would queue, {"runs": rows, "plan": its key}: the key is what
        estimate() returns with an estimate, so a view shows an estimate only under its own grid."""
        cells, _ = self._cells(experiment, preset_name, variants, seeds, steps, lr, data, overrides)
        rows = [{"run": c.name, "variant": c.label, "seed": c.seed, "steps": c.config.train.steps,
                 "lr": c.config.train.lr, "preset": preset_name} for c in cells]
        return {"runs": rows, "plan": plan_key(cells)}

    def _cells(self, experiment, preset_name, variants, seeds, steps, lr, data, overrides):
        validate_name(str(experiment or ""), "experiment name")
        if preset_name not in self.limits.presets:
            raise ValueError(f"preset must be one of {', '.join(self.limits.presets)}")
        variants = [variants] if isinstance(variants, str) else [v for v in (variants or []) if v]
        if not variants:
            raise ValueError("choose at least one variant")
        for label in variants:
            if not isinstance(label, str):
                raise ValueError(f"a variant is a label like 'dual+ffn_share=none', got {label!r:.60}")
            parse_variant(label)
        seed_list = parse_seeds(seeds, self.limits.max_seeds)
        steps = _whole_steps(steps)
        extra = parse_overrides(overrides) + _lr_override(lr)
        cells = grid(preset_name, variants, seed_list, extra, steps, (data or None))
        self.check_cells(preset_name, cells)
        return cells, (steps, extra, seed_list, variants)

    def check_cells(self, preset_name: str, cells: list) -> None:
        """This app's caps on what each run of a grid or a study may be: its steps and, locked
        (demo), nothing changed but the FFN and the optimisation settings."""
        cap = self.limits.max_steps
        if cap and any(c.config.train.steps > cap for c in cells):
            raise ValueError(f"at most {cap} steps per run here")
        if self.limits.locked:
            for cell in cells:
                _check_locked(cell.config, preset(preset_name))

    def estimate(self, experiment: str, preset_name: str, variants: list[str], seeds,
                 steps: int | None = None, lr: float | None = None, data: str | None = None,
                 overrides=None) -> dict:
        """Expected wall time of the grid on this machine, from step times measured once per run
        shape (in the background: `pending` counts runs whose shape is still being timed).

        Keys: runs, concurrent, pending, seconds (None while pending), step_s per variant, errors,
        waiting (True when timing waits for the running jobs to finish), plan (the key of the grid
        estimated, as planned() gives it). Tokenizing a corpus for the first time is not included."""
        cells, _ = self._cells(experiment, preset_name, variants, seeds, steps, lr, data, overrides)
        total, pending, step_s, errors = 0.0, 0, {}, []
        idle = not self.jobs.active()
        for cell in cells:
            timing = self.step_times.get(cell.config, measure_now=idle)
            error = self.step_times.error(cell.config)
            if error:
                errors.append(f"{cell.label}: {error}")
            if timing is None:
                pending += 1
                continue
            total += run_seconds(cell.config, timing)
            step_s[cell.label] = timing.step_s
        concurrent = max(1, min(self.jobs.max_concurrent, len(cells)))
        seconds = None if pending else total / concurrent
        return clean({"runs": len(cells), "concurrent": concurrent, "pending": pending, "seconds": seconds,
                       "step_s": step_s, "errors": sorted(set(errors)),
                       "waiting": bool(pending) and not idle, "plan": plan_key(cells)})

    def launch(self, experiment: str, preset_name: str, variants: list[str], seeds, steps: int | None = None,
               lr: float | None = None, data: str | None = None, overrides=None,
               trackers: list[str] | None = None, executor: str = "local",
               resources: dict | None = None) -> dict:
        """Queue the grid, each run mirroring its metrics to `trackers` (trackio, tensorboard,
        wandb), on `executor` (local, or slurm with `resources`: partition, gpus_per_run,
        nodes_per_run, ranks_per_run, cpus_per_rank, time); returns the queued run names and a
        message."""
        if executor not in self.executors:
            offered = " or ".join(self.executors)
            raise ValueError(f"executor {executor!r} is not offered here; choose {offered}")
        cluster = cluster_resources(resources) if executor == "slurm" else None
        if trackers and self.limits.locked:  # a Space's credentials must not take visitors' runs
            raise ValueError("mirroring metrics to trackers is off in this demo; run the explorer "
                             "locally to use --log-to")
        cells, (steps, extra, seed_list, variants) = self._cells(experiment, preset_name, variants, seeds,
                                                                 steps, lr, data, overrides)
        if self.limits.max_queue is not None:
            waiting = sum(r["state"] in ("queued", "running") for r in self.jobs.status())
            if waiting + len(cells) > self.limits.max_queue:
                raise ValueError(f"the queue holds at most {self.limits.max_queue} runs here "
                                 f"({waiting} waiting); wait or cancel some")
        queued = self.jobs.submit(experiment, preset_name, variants, seed_list, steps, extra, data or None,
                                  trackers, executor, cluster)
        skipped = len(cells) - len(queued)
        message = f"queued {len(queued)} run(s) in {experiment}"
        if executor == "slurm":
            message += " on SLURM"
        if skipped:
            message += f"; {skipped} already completed or in the queue"
        return {"queued": queued, "message": message}

    def status(self, experiment: str | None = None) -> list[dict]:
        if experiment:
            validate_name(experiment, "experiment name")
        return clean(self.jobs.status(experiment or None))

    def cancel(self, experiment: str, run: str) -> str:
        validate_name(experiment, "experiment name")
        validate_name(run, "run name")
        return self.jobs.cancel(experiment, run)

    # curves and results ---------------------------------------------------------------------------
    def curves(self, experiment: str, metric: str = VAL_LOSS, x: str = "step",
               smoothing: float = 0.0) -> dict:
        """Per variant: x, mean, std, min, max, n of `metric` over seeds, plus per-seed series."""
        if x not in X_KEYS:
            raise ValueError(f"x must be one of {', '.join(X_KEYS)}")
        if not 0 <= float(smoothing) < 1:
            raise ValueError("smoothing must be in [0, 1)")
        groups: dict[str, list[list[dict]]] = {}
        for info in self._polled(experiment).values():
            groups.setdefault(info["variant"], []).append(info["metrics"])
        out = {}
        for variant, runs in groups.items():
            band = seed_band(runs, metric, x, float(smoothing))
            if len(band.x):
                out[variant] = {**band.to_dict(), "seeds": [_series(m, metric, x) for m in runs]}
        return clean(out)

    def diagnostic_families(self, experiment: str) -> dict[str, dict[str, str]]:
        """{"group/metric": {layer label: metric key}} of the diagnostics this experiment logged."""
        groups: dict[str, list[list[dict]]] = {}
        for info in self._polled(experiment).values():
            groups.setdefault(info["variant"], []).append(info["metrics"])
        return {f"{group}/{name}": layers for group, names in diagnostic_keys(groups).items()
                for name, layers in names.items()}

    def diagnostics(self, experiment: str, family: str, x: str = "step", smoothing: float = 0.0) -> dict:
        """Seed bands of one diagnostic for every variant and layer, keyed "variant L{i}"."""
        layers = self.diagnostic_families(experiment).get(family)
        if layers is None:
            raise ValueError(f"no diagnostic {family!r} logged in {experiment}")
        out = {}
        for layer, key in sorted(layers.items(), key=lambda item: (len(item[0]), item[0])):
            for variant, band in self.curves(experiment, key, x, smoothing).items():
                out[f"{variant} {layer}"] = band
        return out

    def results(self, experiment: str, baseline: str | None = None) -> list[dict]:
        validate_name(experiment, "experiment name")
        table = table1(experiment_records(self.root, experiment), baseline or None)
        return clean(table.to_dict("records"))

    def results_csv(self, experiment: str, baseline: str | None = None) -> str:
        """Write Table 1 as CSV to a temp file (outside runs/) and return its path."""
        rows = self.results(experiment, baseline)
        folder = Path(tempfile.mkdtemp(prefix="explorer-csv-"))
        path = folder / f"{experiment}-table1.csv"
        pd.DataFrame(rows).to_csv(path, index=False)
        return str(path)

    # inspect ------------------------------------------------------------------------------------
    def inspect(self, run_ids: list[str], text: str) -> list[dict]:
        """Per-token routing, sparsity and loss of one or two runs on `text`."""
        if not isinstance(text, str) or not text.strip():
            raise ValueError("enter some text to inspect")
        if len(text) > self.limits.max_text_chars:
            raise ValueError(f"text is longer than {self.limits.max_text_chars:,} characters")
        run_ids = [r for r in (run_ids or []) if r]
        if not 1 <= len(run_ids) <= 2:
            raise ValueError("pick one or two runs to inspect")
        return [clean(inspect_text(self._run(run_id), text).to_dict()) for run_id in run_ids]

    # atlas --------------------------------------------------------------------------------------
    def atlas(self, run_a: str, run_b: str | None, layer, unit, tokens) -> dict:
        """The routing atlas of run A (and B aligned on the same tokens) over the validation split
        at `layer`, with `unit`'s top contexts: core.analysis.atlas.atlas_view's JSON. Cached in
        the run folders, so a second look is instant."""
        if not run_a:
            raise ValueError("pick run A for the atlas")
        count, at, chosen = _whole_number(tokens), _whole_number(layer), _whole_number(unit)
        if count is None or not 1 <= count <= ATLAS_MAX_TOKENS:
            raise ValueError(f"atlas tokens must be a whole number from 1 to {ATLAS_MAX_TOKENS:,}")
        if at is None or chosen is None or chosen < 0:
            raise ValueError("layer and unit must be whole numbers >= 0")
        return atlas_view(run_a, at, chosen, compare=run_b or None, tokens=count, runs_dir=self.root)

    def num_layers(self, run_id: str) -> int:
        """Decoder layers of a run (what Inspect's layer control ranges over)."""
        config = self._run(run_id).read_config() or {}
        return int((config.get("model") or {}).get("num_hidden_layers") or 1)

    def top_layer(self, run_ids: list[str | None]) -> int:
        """Index of the deepest layer among `run_ids` (0 when none can be read)."""
        depths = [1]
        for run_id in (r for r in run_ids if r):
            try:
                depths.append(self.num_layers(run_id))
            except ValueError:
                continue
        return max(depths) - 1

    def _run(self, run_id: str) -> Run:
        experiment, sep, name = str(run_id).partition("/")
        if not sep:
            raise ValueError(f"run {run_id[:60]!r} should look like experiment/run")
        run = Run.at(self.root, experiment, name)
        if not run.exists():
            raise ValueError(f"no run {run_id!r} under the runs folder")
        return run

    def close(self) -> None:
        self.studies.shutdown()
        self.jobs.shutdown()

    # compare across experiments (the Compare tab, /compare) --------------------------------------
    def _compare_records(self, experiments) -> dict[str, list[dict]]:
        """The records of the chosen experiments (a name or a list), each checked to be on disk."""
        chosen = [experiments] if isinstance(experiments, str) else list(experiments or [])
        chosen = list(dict.fromkeys(name for name in chosen if name))
        if not chosen:
            raise ValueError("choose at least one experiment to compare")
        on_disk = set(self.experiments())
        for name in chosen:
            validate_name(name, "experiment name")
            if name not in on_disk:
                raise ValueError(f"no experiment {name!r} under the runs folder")
        return {name: experiment_records(self.root, name) for name in chosen}

    def compare_keys(self, experiments) -> dict[str, list[str]]:
        """What the chosen experiments' runs can be compared by: {"keys": config keys (variant,
        experiment and non-embedding parameters first), "metrics": the metrics they logged}."""
        records = self._compare_records(experiments)
        return {"keys": config_keys(records), "metrics": metric_keys(records)}

    def compare(self, experiments, x: str, colour: str = VARIANT, metric: str = VAL_LOSS) -> list[dict]:
        """Final `metric` (the final val loss by default) of the finished runs of `experiments`
        against config key `x`, one group per value of `colour`, seeds collapsed: rows of colour,
        x, n, mean, std, min, max, seeds, runs, values (core.analysis.compare.compare_rows)."""
        records = self._compare_records(experiments)
        return clean(compare_rows(records, x, colour or VARIANT, metric or VAL_LOSS))


def _series(metrics: list[dict], metric: str, x: str) -> tuple[list, list]:
    xs, ys = metric_series(metrics, metric, x)
    return xs.tolist(), ys.tolist()
