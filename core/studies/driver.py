"""Advance studies from a long-lived process (the app): each phase's runs are queued once the
phases before them have ended, and the state lives on disk, so an app that is restarted (or killed)
picks every study up again and launches each run exactly once.

Exactly once: a pass queues only runs that have no status yet; the job queue writes "queued" to
a run's status.json before anything else can start it, and a restarted job manager finds queued
and running runs on disk (core.jobs.recovery). A failed run is not retried by the study (the
best-lr rule skips it; relaunch it from the Launch tab). The CLI's ``core.sweep --study`` runs the
same phases in one sitting (core.studies.run).
"""

import logging
import threading
from collections.abc import Callable
from pathlib import Path

from core.jobs.launch import Cell
from core.lifecycle import FINAL_STATES
from core.runs import Run, runs_root
from core.studies.manifest import manifest_study, manifests, record_phase, record_study, write_driver
from core.studies.plan import Phase, final_phases, first_phases, point_steps
from core.studies.results import best_lrs
from core.studies.study import Study

log = logging.getLogger(__name__)
Queue = Callable[[str, list[Cell]], list[str]]  # (experiment, cells) -> names of the runs queued
# (experiment, cells, the study's launch options: executor, trackers, ...) -> names of the runs queued
Submit = Callable[[str, list[Cell], dict], list[str]]
LAUNCH_KEYS = ("executor", "trackers", "resources")  # what drive() records for later phases


def advance(study: Study, root: Path, queue: Queue) -> bool:
    """One pass over `study`: queue the runs of the earliest phases that have not ended (a point's
    sweep before its final runs, points in order); True once every phase has ended."""
    for point in study.points:
        steps = point_steps(study, point)
        if not settle(study, first_phases(study, point, steps), root, queue):
            return False
        if study.selects:
            finals = final_phases(study, point, steps, best_lrs(study, point, root))
            if not settle(study, finals, root, queue):
                return False
    return True


def settle(study: Study, phases: list[Phase], root: Path, queue: Queue) -> bool:
    """Queue the runs of `phases` that were never queued; True when every run of them has ended."""
    ended = True
    for phase in phases:
        runs = [Run.at(root, phase.experiment, cell.name) for cell in phase.cells]
        fresh = [cell for cell, run in zip(phase.cells, runs, strict=True) if not run.read_status()]
        if fresh:
            record_phase(root, study, phase)  # before the runs: readers find them from the start
            queue(phase.experiment, fresh)
        ended = ended and not fresh and all(_ended(run) for run in runs)
    return ended


def _ended(run: Run) -> bool:
    state = run.effective_state()
    return state in FINAL_STATES or state == "failed (orphaned)"


class StudyDriver:
    """Advances every study whose manifest says the app drives it ("running"), every `poll_s`
    seconds on a thread of its own, through `submit` (the job manager's)."""

    def __init__(self, root: str | Path | None, submit: Submit, poll_s: float = 2.0, start: bool = True):
        self.root, self.submit, self.poll_s = runs_root(root), submit, poll_s
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = None
        if start:
            self._thread = threading.Thread(target=self._loop, name="study-driver", daemon=True)
            self._thread.start()

    def drive(self, study: Study, **launch) -> None:
        """Take `study` on (its launch options, LAUNCH_KEYS, are recorded) and advance it now."""
        unknown = set(launch) - set(LAUNCH_KEYS)
        if unknown:
            raise ValueError(f"unknown launch options {sorted(unknown)}; known: {', '.join(LAUNCH_KEYS)}")
        with self._lock:
            record_study(self.root, study)
            write_driver(self.root, study.name, state="running", error=None, **launch)
        self.tick()

    def cancel(self, study: Study) -> None:
        """Stop queueing `study`'s later phases (runs already queued are cancelled in the runs table)."""
        with self._lock:
            write_driver(self.root, study.name, state="cancelled")

    def tick(self) -> None:
        """One pass over the driven studies; a study that cannot advance is marked failed."""
        with self._lock:
            for name, manifest in manifests(self.root).items():
                if manifest.get("driver", {}).get("state") == "running":
                    self._advance(name, manifest)

    def _advance(self, name: str, manifest: dict) -> None:
        launch = {key: value for key, value in manifest["driver"].items() if key in LAUNCH_KEYS}

        def queue(experiment: str, cells: list[Cell]) -> list[str]:
            return self.submit(experiment, cells, launch)

        try:
            study = manifest_study(manifest)
            if advance(study, self.root, queue):
                write_driver(self.root, name, state="completed")
        except (ValueError, OSError) as error:
            log.error("study %s cannot advance: %s", name, error)
            write_driver(self.root, name, state="failed", error=str(error))

    def _loop(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self.tick()
            except Exception:  # a full disk must not end the driver
                log.exception("study driver pass failed")

    def shutdown(self) -> None:
        """Stop the thread (the studies stay "running" on disk for the next app)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
