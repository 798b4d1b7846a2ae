"""The app's runs on SLURM: submitted as one job array, followed by asking squeue at most every
SLURM_POLL_S seconds and merging its word with each run's own status.json (executors.merge_state).
Their liveness is the scheduler's plus the trainer's heartbeat, never a lock or a pid (neither
means anything across machines)."""

import logging
import threading
import time
from pathlib import Path

from core.jobs.executors import (
    SLURM_POLL_S,
    SlurmExecutor,
    is_final,
    merge_state,
    scancel,
    slurm_states,
    submit_runs,
)
from core.jobs.launch import Cell, Launch, Resources, run_record
from core.lifecycle import FINAL_STATES
from core.runs import Run, slurm_folder

log = logging.getLogger(__name__)


class RemoteRuns:
    """Cluster runs of one runs root that have not ended yet, and squeue's last answer on them."""

    def __init__(self, root: Path):
        self.root = root
        self.runs: dict[Path, Run] = {}
        self._answers: dict[str, tuple[str, str]] = {}  # job id: (state, reason) at the last poll
        self._polled_at = 0.0  # when squeue was last asked
        self._lock = threading.Lock()

    def follow(self, run: Run) -> None:
        with self._lock:
            self.runs[run.path] = run

    def knows(self, run: Run) -> bool:
        with self._lock:
            return run.path in self.runs

    def submit(self, experiment: str, todo: list[tuple[Cell, Run]], trackers: list[str],
               resources: Resources) -> list[str]:
        """Submit the cells as one job array; return the names of the runs submitted."""
        device = "cuda" if resources.gpus_per_run else "cpu"
        for cell, run in todo:
            if run.read_config() is None:
                run.write_config(run_record(cell.config, device, resources.ranks()))
        launches = [Launch(run, tuple(cell.flags), tuple(trackers)) for cell, run in todo]
        submit_runs(SlurmExecutor(slurm_folder(self.root, experiment), resources, experiment), launches)
        for _, run in todo:
            self.follow(run)
        return [run.name for _, run in todo]

    def poll(self) -> None:
        """Ask squeue about the runs; settle those that ended without a final status."""
        with self._lock:
            runs = list(self.runs.values())
        if not runs or time.time() - self._polled_at < SLURM_POLL_S:
            return
        self._polled_at = time.time()
        ids = [job for job in (run.read_status().get("job_id") for run in runs) if isinstance(job, str)]
        try:
            states = slurm_states(ids)
        except ValueError as error:  # the controller is down or slow: keep the last answer
            log.warning("cannot poll SLURM: %s", error)
            return
        with self._lock:
            self._answers.update(states)
        for run in runs:
            status = run.read_status()
            merged = merge_state(status, *states.get(status.get("job_id"), ("unknown", "")))
            if is_final(merged):
                self._settle(run, status, merged)

    def _settle(self, run: Run, status: dict, merged: str) -> None:
        with self._lock:
            self.runs.pop(run.path, None)
        ended = merged.split()[0]
        if status.get("state") != ended:  # the job ended before the trainer could say how
            run.write_status(ended, error=merged)

    def state(self, run: Run, status: dict) -> str:
        """A cluster run's state: its status merged with squeue's last answer (the status alone
        before the first answer, or when the trainer wrote it after that answer)."""
        state = status.get("state", "queued")
        with self._lock:
            answer = self._answers.get(status.get("job_id")) if run.path in self.runs else None
            polled_at = self._polled_at
        if answer is None or (state == "running" and status.get("updated", 0) > polled_at):
            return state  # not asked yet, or the trainer spoke after squeue did
        return merge_state(status, *answer)

    def cancel(self, run: Run, status: dict) -> str:
        """scancel the run's job; a run that never started is cancelled here, a running one by its
        trainer (SIGTERM)."""
        state = status.get("state")
        if state in FINAL_STATES:
            raise ValueError(f"run {run.experiment}/{run.name} is {state}: only queued or running runs "
                             "can be cancelled")
        scancel(status["job_id"])
        if state in ("queued", "preempted"):
            run.write_status("cancelled", error="cancelled before it started")
        return "cancelled"
