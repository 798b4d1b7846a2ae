"""Where a study stands: how many runs it trains, which phase it is in, runs done / running /
queued, and an ETA for the whole study (torch-free, from the manifest and the runs' files)."""

import math
from pathlib import Path

from core.lifecycle import FINAL_STATES
from core.runs import Run
from core.studies.manifest import read_manifest
from core.studies.plan import final_phases, first_phases, point_steps, short_sweep
from core.studies.results import best_lrs
from core.studies.study import Study


def run_count(study: Study) -> tuple[int, int]:
    """(fewest, most) runs the study trains. They differ only with a shared lr, where the final
    runs are trained at the shared lr and at every best lr that differs from it."""
    seeds_first = 1 if study.selects else len(study.seeds)
    per_point_first = len(study.variants) * seeds_first * max(1, len(study.lrs))
    seeds = len(study.seeds) if short_sweep(study) else len(study.seeds) - 1
    finals = (len(study.variants) * seeds) if study.selects else 0
    most = finals
    if study.selects and study.shared_lr is not None:
        most = finals * min(len(study.lrs), 1 + len(study.variants))
    points = len(study.points)
    return points * (per_point_first + finals), points * (per_point_first + most)


def study_runs(study: Study, root: Path, manifest: dict) -> dict[tuple[str, str], tuple[str, str]]:
    """{(experiment, run): (phase name, state)} of every run known so far: each point's first phases
    (known before any lr is selected) and, once they have ended, its final runs; then any other
    phase the study's `manifest` recorded. Each run's status is read once."""
    found: dict[tuple[str, str], tuple[str, str]] = {}
    for point in study.points:
        steps = point_steps(study, point)
        first = _with_states(first_phases(study, point, steps), root)
        found.update(first)
        ended = all(state in ("completed", "failed") for _, state in first.values())
        if study.selects and ended:  # the sweep has ended: the final runs are known
            finals = final_phases(study, point, steps, best_lrs(study, point, root))
            found.update(_with_states(finals, root))
    for entry in manifest.get("phases", []):
        for name in entry.get("runs", []):
            run = Run.at(root, entry["experiment"], name)
            if (run.experiment, name) not in found:
                found[(run.experiment, name)] = (_phase_name(entry), _bucket(run))
    return found


def _with_states(phases: list, root: Path) -> dict[tuple[str, str], tuple[str, str]]:
    """{(experiment, run): (phase name, state)} of the runs of `phases`."""
    found = {}
    for phase in phases:
        name = _phase_name({"kind": phase.kind, "point": phase.point, "lr": phase.lr})
        for cell in phase.cells:
            found[(phase.experiment, cell.name)] = (name, _bucket(Run.at(root, phase.experiment, cell.name)))
    return found


def progress(study: Study, root: Path) -> dict:
    """The study's phase (the first with a run not ended; "(not started)" when nothing runs or is
    queued), run counts by state ("waiting": not yet queued), total runs, a finished run's mean
    seconds, an ETA (None while nothing runs, or until a run has finished) and the driver's state
    ("" when the CLI runs it)."""
    manifest = read_manifest(root, study.name) or {}
    counts = {"completed": 0, "running": 0, "queued": 0, "failed": 0, "waiting": 0}
    phase, seconds = "", []
    for (experiment, name), (phase_name, state) in study_runs(study, root, manifest).items():
        counts[state] += 1
        seconds += _elapsed(Run.at(root, experiment, name)) if state == "completed" else []
        if state not in ("completed", "failed") and not phase:
            phase = phase_name
    fewest, most = run_count(study)
    counts["waiting"] += max(0, fewest - sum(counts.values()))  # final runs not planned yet
    driver = manifest.get("driver", {})
    active = bool(counts["running"] or counts["queued"]) or driver.get("state") == "running"
    if phase and not active:
        phase = f"{phase} (not started)"
    return {"phase": phase or "done", **counts, "runs": fewest, "runs_most": most,
            "run_s": _mean(seconds), "eta_s": _eta(counts, _mean(seconds)) if active else None,
            "state": driver.get("state", ""), "error": driver.get("error")}


def _bucket(run: Run) -> str:
    if not run.read_status():
        return "waiting"
    state = run.effective_state()
    if state in ("running", "queued", "completed"):
        return state
    return "failed" if state in FINAL_STATES or state.startswith("failed") else "queued"


def _elapsed(run: Run) -> list[float]:
    value = (run.read_summary() or {}).get("elapsed_s")
    return [float(value)] if isinstance(value, (int, float)) and math.isfinite(value) else []


def _phase_name(entry: dict) -> str:
    where = f" {entry['point']}" if entry.get("point") else ""
    lr = f" lr {entry['lr']:g}" if isinstance(entry.get("lr"), (int, float)) else ""
    return f"{entry.get('kind', '?')}{where}{lr}"


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _eta(counts: dict, run_s: float | None) -> float | None:
    """Runs left (of the fewest the study may train) times a finished run's mean time, one at a
    time, the running ones counted as half done."""
    if run_s is None:
        return None
    return (counts["waiting"] + counts["queued"] + counts["running"] / 2) * run_s
