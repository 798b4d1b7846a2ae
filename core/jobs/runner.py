"""Run a planned grid on an executor and wait for it: what `core.sweep`, the studies and the Hub's
re-runs share. Completed runs are skipped, interrupted ones resumed.
"""

import sys
import time
from pathlib import Path

from tqdm import tqdm

from core.jobs.executors import Executor, Launch, is_final, merge_state, submit_runs
from core.jobs.launch import Cell
from core.runs import Run


def plan(cells: list[Cell], root: Path, experiment: str) -> list[tuple[Cell, Run]]:
    """(cell, run) for the cells left to do; completed runs are skipped. Whether a run resumes is
    decided when it starts (its checkpoint may be newer by then)."""
    todo = []
    for cell in cells:
        run = Run.at(root, experiment, cell.name)
        run.check_config(cell.config)
        if run.read_status().get("state") == "completed":
            continue
        todo.append((cell, run))
    return todo


def execute(todo: list[tuple[Cell, Run]], executor: Executor, progress: bool = True,
            trackers: tuple[str, ...] = ()) -> dict[str, int]:
    """Start the planned cells on `executor`, each mirroring its metrics to `trackers`, and wait
    for all; return each run's exit code (local) or 0 / 1 for completed / not (a cluster)."""
    launches = [Launch(run, tuple(cell.flags), tuple(trackers)) for cell, run in todo]
    remote = executor.name != "local"
    attached = _live_jobs(executor, launches) if remote else {}
    fresh = [launch for launch in launches if launch not in attached.values()]
    ids = list(attached) + submit_runs(executor, fresh)
    launches = list(attached.values()) + fresh
    if attached:
        print(f"{len(attached)} runs already queued or running on {executor.name}: following them")
    try:
        _wait(executor, dict(zip(ids, launches, strict=True)), progress)
    except KeyboardInterrupt:  # local children lead their own sessions: Ctrl-C must reach them
        stop = getattr(executor, "stop", None)
        if stop is not None:
            print("interrupted: cancelling the runs of this sweep", file=sys.stderr)
            stop()
        raise
    codes = dict(getattr(executor, "exit_codes", {}))  # local: the processes' own
    for job_id, launch in zip(ids, launches, strict=True):
        if job_id not in codes:
            codes[job_id] = 0 if launch.run.read_status().get("state") == "completed" else 1
    return {launch.run.name: codes[job_id] for job_id, launch in zip(ids, launches, strict=True)}


def _wait(executor: Executor, left: dict[str, Launch], progress: bool) -> None:
    """Poll `executor` until every job of `left` (job id: launch) has ended."""
    remote = executor.name != "local"
    bar = tqdm(total=len(left), unit="run", disable=not progress, desc=f"sweep ({executor.name})")
    while left:
        time.sleep(executor.poll_s)
        for job_id, state in executor.state(list(left)).items():
            if remote:
                state = merge_state(left[job_id].run.read_status(), state)
            if is_final(state):
                del left[job_id]
                bar.update(1)
    bar.close()


def _live_jobs(executor: Executor, launches: list[Launch]) -> dict[str, Launch]:
    """Launches whose run an earlier sweep (or the app) already has queued or running on this
    executor, by job id: followed, never submitted twice."""
    jobs = {}
    for launch in launches:
        status = launch.run.read_status()
        if status.get("executor") == executor.name and status.get("job_id"):
            jobs[status["job_id"]] = launch
    if not jobs:
        return {}
    states = executor.state(list(jobs))
    return {job: launch for job, launch in jobs.items()
            if not is_final(merge_state(launch.run.read_status(), states[job]))}
