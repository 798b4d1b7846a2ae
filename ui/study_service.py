"""The Studies tab's callbacks as plain Python (no Gradio), beside ui.service's Explorer.

A study is listed from the built-ins (studies/*.toml) and the manifests under the runs root (every
study that ran here, composed ones included); launching one hands it to core.studies.driver, which
queues each phase on the app's job manager once the phases before it have ended.
"""

import math
import threading
from collections.abc import Callable
from pathlib import Path

from core.analysis.stats import band_over_x, table1
from core.jobs.estimate import StepTimes, run_seconds
from core.jobs.manager import JobManager
from core.runs import experiment_stamp, validate_name
from core.studies.compose import MAX_RUNS, Form, from_text, save, study_text
from core.studies.driver import StudyDriver
from core.studies.manifest import manifest_path, manifest_study, manifests, read_manifest, study_experiments
from core.studies.plan import final_phases, first_phases, point_steps
from core.studies.progress import progress, run_count
from core.studies.report import delta_figure, diagnostics_figure, loss_figure, lr_figure, lr_losses
from core.studies.results import best_lrs, point_records, scaling_rows
from core.studies.study import Study, builtin_names, load_study

DEFAULT_STUDY = "cpu-scaling"  # drawn when the tab opens: the shipped trend with size


class Studies:
    """List, show, compose and launch studies under one runs root."""

    def __init__(self, root: Path, jobs: JobManager, step_times: StepTimes, limits, start: bool = True,
                 check_cells: Callable[[str, list], None] | None = None):
        self.root, self.jobs, self.step_times, self.limits = root, jobs, step_times, limits
        self.check_cells = check_cells  # the app's caps on each run (ui.service.Explorer.check_cells)
        self.driver = StudyDriver(root, self._submit, start=start)
        self._cache: dict[tuple[str, str], tuple[tuple, object]] = {}  # (study, view) -> (stamp, value)
        self._lock = threading.Lock()

    def _cached(self, study: Study, what: str, compute):
        """`compute()` for `study`, recomputed only when a file of its runs or its manifest changed
        (a refresh of an unchanged study reads only file sizes and times)."""
        stamp = (read_manifest(self.root, study.name), study.text,
                 tuple(experiment_stamp(self.root, e) for e in study_experiments(self.root, study)))
        with self._lock:
            hit = self._cache.get((study.name, what))
        if hit is not None and hit[0] == stamp:
            return hit[1]
        value = compute()
        with self._lock:
            self._cache[(study.name, what)] = (stamp, value)
        return value

    def _submit(self, experiment: str, cells: list, launch: dict) -> list[str]:
        executor = launch.get("executor", "local")
        return self.jobs.submit_cells(experiment, cells, launch.get("trackers"), executor)

    # listing -----------------------------------------------------------------------------------
    def names(self) -> list[dict]:
        """Every study: the built-ins, then those that ran here; name, where it comes from, its
        description, its driver's state and its run count."""
        found = {name: ("built-in", None) for name in builtin_names()}
        for name, manifest in manifests(self.root).items():
            found[name] = (found.get(name, ("ran here",))[0], manifest)
        out = []
        for name, (source, manifest) in found.items():
            study = manifest_study(manifest) if manifest and "text" in manifest else load_study(name)
            out.append({"name": name, "source": source, "description": study.description,
                        "state": ((manifest or {}).get("driver") or {}).get("state", ""),
                        "runs": run_count(study)[0]})
        return out

    def load(self, name: str) -> Study:
        """A built-in study by name, else the study recorded under the runs root."""
        validate_name(str(name or ""), "study name")
        manifest = manifests(self.root).get(name)
        if manifest is not None and "text" in manifest:
            return manifest_study(manifest)
        if name in builtin_names():
            return load_study(name)
        saved = manifest_path(self.root, name).with_suffix(".toml")  # composed, not launched yet
        if saved.is_file():
            return load_study(saved)
        known = ", ".join(s["name"] for s in self.names())
        raise ValueError(f"unknown study {name!r}; choose one of {known}")

    # one study ---------------------------------------------------------------------------------
    def view(self, name: str) -> dict:
        """What the tab shows of study `name`: its points, the rows at every (point, lr) and the
        trend (each variant at its selected lr), each with n, mean, std, delta to the baseline, both
        95% intervals, p and whether the lr is the selected one, plus its progress."""
        study = self.load(name)
        return self._cached(study, "view", lambda: self._view(study))

    def _view(self, study: Study) -> dict:
        trend = scaling_rows(study, self.root)
        return {"study": study.name, "description": study.description, "axis": study.axis or "lr",
                "points": [p.name for p in study.points], "rows": self._lr_rows(study),
                "trend": _trend_rows(trend), "progress": progress(study, self.root)}

    def _lr_rows(self, study: Study) -> list[dict]:
        rows = []
        for point in study.points:
            best = best_lrs(study, point, self.root) if study.selects else {}
            for variant, by_lr in lr_losses(study, self.root, point).items():
                rows += _lr_band_rows(point.name, variant, by_lr, best.get(variant))
        return rows

    def figures(self, name: str) -> dict:
        """The study's figures, drawn by the code of its HTML report (core.studies.report): the
        trend along the axis (the difference to the baseline with its 95% interval), the final loss
        and the diagnostics against it; without an axis, the loss against lr with the selected lr
        starred. None for a figure the study has no data for yet."""
        study = self.load(name)
        return self._cached(study, "figures", lambda: self._figures(study))

    def _figures(self, study: Study) -> dict:
        if not study.axis:
            best = best_lrs(study, study.points[0], self.root) if study.selects else {}
            losses = lr_losses(study, self.root)
            return {"trend": lr_figure(losses, best) if losses else None, "loss": None, "diagnostics": None}
        rows = scaling_rows(study, self.root)
        if not rows:
            return {"trend": None, "loss": None, "diagnostics": None}
        return {"trend": delta_figure(rows), "loss": loss_figure(rows),
                "diagnostics": diagnostics_figure(rows)}

    def table(self, name: str, point: str | None = None) -> list[dict]:
        """Table 1 rows at `point` (default the first): each variant at its selected lr."""
        study = self.load(name)
        chosen = next((p for p in study.points if p.name == (point or study.points[0].name)), None)
        if chosen is None:
            points = ", ".join(p.name for p in study.points)
            raise ValueError(f"study {name} has no point {point!r}; its points: {points}")
        return self._cached(study, f"table {chosen.name}", lambda: self._table(study, chosen))

    def _table(self, study: Study, point) -> list[dict]:
        records = point_records(study, point, self.root)
        return table1(records).to_dict("records") if records else []

    # compose and launch ------------------------------------------------------------------------
    def compose(self, form: Form) -> Study:
        """The study of `form`, checked against this app's caps (nothing written)."""
        return self.from_text(form.name, study_text(form))

    def from_text(self, name: str, text: str) -> Study:
        """A study from a study file's text, named `name`, checked against this app's caps."""
        study = from_text(name, text, self.root, max_runs=self.limits.max_queue or MAX_RUNS)
        self._check_caps(study)
        return study

    def _check_caps(self, study: Study) -> None:
        limits = self.limits
        if study.preset not in limits.presets:
            raise ValueError(f"preset must be one of {', '.join(limits.presets)}")
        if len(study.seeds) > limits.max_seeds:
            raise ValueError(f"at most {limits.max_seeds} seeds here, got {len(study.seeds)}")
        if limits.max_steps and (study.steps is None or study.steps > limits.max_steps):
            raise ValueError(f"give steps, at most {limits.max_steps} per run here")
        most = run_count(study)[1]
        cap = limits.max_queue or MAX_RUNS
        if most > cap:
            raise ValueError(f"the study trains up to {most:,} runs; at most {cap:,} may be launched here")
        if self.check_cells is not None:
            self.check_cells(study.preset, _estimate_cells(study))

    def estimate(self, study: Study) -> dict:
        """Run count and expected wall time here (None while step times are being measured)."""
        fewest, most = run_count(study)
        cells = _estimate_cells(study)
        idle = not self.jobs.active()
        timings = [self.step_times.get(cell.config, measure_now=idle) for cell in cells]
        errors = sorted({e for cell in cells if (e := self.step_times.error(cell.config))})
        seconds = None
        if all(t is not None for t in timings):
            total = sum(run_seconds(cell.config, t) for cell, t in zip(cells, timings, strict=True))
            seconds = total / max(1, min(self.jobs.max_concurrent, fewest))
        return {"runs": fewest, "runs_most": most, "seconds": seconds, "errors": errors,
                "pending": sum(t is None for t in timings)}

    def launch(self, study: Study) -> dict:
        """Save a composed study's file, then start driving it; returns its progress."""
        self._check_caps(study)  # every launch: a built-in by name too
        if study.name not in builtin_names():
            save(study)
        self.driver.drive(study, executor="local")
        return progress(study, self.root)

    def shutdown(self) -> None:
        self.driver.shutdown()


def _estimate_cells(study: Study) -> list:
    """Cells standing for every run of the study (the fewest): the first phases, and the final runs
    as if every variant's best lr were the first of the grid (an lr does not change a step's cost)."""
    cells = []
    for point in study.points:
        steps = point_steps(study, point)
        cells += [c for phase in first_phases(study, point, steps) for c in phase.cells]
        if study.selects:
            guess = {label: study.lrs[0] for label in study.variants}
            cells += [c for phase in final_phases(study, point, steps, guess) for c in phase.cells]
    return cells


def _lr_band_rows(point: str, variant: str, by_lr: dict[float, list[float]],
                  best: float | None) -> list[dict]:
    """One row per lr: n, mean and sample std (NaN below 2 seeds) of the variant's final losses."""
    lrs = sorted(by_lr)
    band = band_over_x(lrs, [by_lr[lr] for lr in lrs])
    rows = []
    for i, lr in enumerate(lrs):
        n = int(band.n[i])
        std = float(band.std[i]) if n > 1 else math.nan
        rows.append({"point": point, "variant": variant, "lr": lr, "n": n, "mean": float(band.mean[i]),
                     "std": std, "selected": best == lr})
    return rows


def _trend_rows(rows: list[dict]) -> list[dict]:
    """scaling_rows flattened: one row per point and variant, at its selected lr."""
    out = []
    for row in rows:
        for variant, v in row["variants"].items():
            out.append({"point": row["rung"], "x": row["x"], "variant": variant,
                        "lr": row["lrs"].get(variant), "selected": True, "n": v["seeds"],
                        "mean": v["val_loss"], "std": v["std"],
                        "delta": v["delta"],
                        "ci_low": v["ci_low"], "ci_high": v["ci_high"], "boot_low": v["boot_low"],
                        "boot_high": v["boot_high"], "p": v["p"]})
    return out
