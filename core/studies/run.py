"""Run a study: every axis point in order (smallest rung first), its sweep or grid, then its final
runs at the selected lrs. Completed runs are skipped and interrupted ones resume (core.jobs.runner),
so a study can span several sittings; each phase is recorded in the manifest before it starts.
"""

from pathlib import Path

from core.jobs.executors import Executor, LocalExecutor
from core.jobs.runner import execute, plan
from core.studies.manifest import record_phase
from core.studies.plan import Phase, final_phases, first_phases, point_steps
from core.studies.results import best_lrs
from core.studies.study import Study


def run_study(study: Study, root: Path, executor: Executor | None = None, progress: bool = True,
              trackers: tuple[str, ...] = ()) -> dict[str, int]:
    """Every phase of `study`, each run mirroring its metrics to `trackers`; returns each run's exit
    code (0 = completed) by ``<experiment>/<run>``. Runs on `executor` (default: this machine, one
    at a time)."""
    executor = executor or LocalExecutor()
    codes: dict[str, int] = {}
    for point in study.points:
        steps = point_steps(study, point)
        for phase in first_phases(study, point, steps):
            codes.update(_run_phase(study, phase, root, executor, progress, trackers))
        if study.selects:
            best = best_lrs(study, point, root)
            for phase in final_phases(study, point, steps, best):
                codes.update(_run_phase(study, phase, root, executor, progress, trackers))
    return codes


def _run_phase(study: Study, phase: Phase, root: Path, executor: Executor, progress: bool,
               trackers: tuple[str, ...]) -> dict[str, int]:
    todo = plan(list(phase.cells), root, phase.experiment)
    record_phase(root, study, phase)
    codes = execute(todo, executor, progress, trackers)
    return {f"{phase.experiment}/{name}": code for name, code in codes.items()}
