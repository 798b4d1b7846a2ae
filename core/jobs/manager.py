"""Job control for the app: the shared job runner (core.jobs.local) behind a queue that lives on
disk, SLURM runs (core.jobs.remote), cancel, and live status rows (core.jobs.rows).

The truth lives on disk (status.json and run.lock, through core.runs), so a restarted app finds
queued, running and finished runs again (core.jobs.recovery) and launches nothing twice. In memory
the manager only keeps the runner's queue and children, the runs other processes are training
(they hold a slot while their lock is held), and a metrics cursor per run for cheap polling.
"""

import logging
import os
import signal
import threading
import time
from pathlib import Path

from core.jobs import local
from core.jobs.executors import EXECUTORS, Resources, check_slurm, is_final
from core.jobs.launch import Cell, Launch, grid, run_record
from core.jobs.local import KILL_GRACE_S, Job, LocalRunner
from core.jobs.recovery import ORPHANED, recover
from core.jobs.remote import RemoteRuns
from core.jobs.rows import MetricCursors, eta_seconds, row
from core.lifecycle import LIVE_STATES
from core.runs import Run, list_experiments, list_runs, runs_root, validate_name
from core.trackers import parse_backends

__all__ = ["JobManager", "ORPHANED", "LIVE_STATES", "eta_seconds"]
log = logging.getLogger(__name__)


def _check_seeds(seeds: list[int]) -> None:
    bad = [s for s in seeds if isinstance(s, bool) or not isinstance(s, int) or s < 0]
    if bad:
        raise ValueError(f"seeds must be non-negative integers, got {bad!r}")


def _unique_cells(cells: list[Cell]) -> list[Cell]:
    """Keep the first cell of each run name (two spellings of one variant are one run)."""
    seen: dict[str, Cell] = {}
    for cell in cells:
        seen.setdefault(cell.name, cell)
    return list(seen.values())


def _terminate_pid(run: Run, status: dict) -> str:
    """Cancel a run another manager (or a CLI) trains: SIGTERM to its process group when it leads
    one (what the job runner starts), else to the process; the held lock proves it is alive."""
    pid = status.get("pid")
    if status.get("state") != "running" or not isinstance(pid, int) or pid <= 0:
        raise ValueError(f"run {run.experiment}/{run.name} is being started by another process; "
                         "try again in a moment")
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, signal.SIGTERM)
        else:
            os.kill(pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError) as error:
        raise ValueError(f"cannot interrupt process {pid} training {run.experiment}/{run.name}: "
                         f"{error.strerror}") from None
    return "cancelled"


class JobManager:
    """Queue, launch, cancel and report training runs under one runs root.

    All state is guarded by one lock, so the app may call every method from several threads.
    Children lead their own sessions: they outlive the app, and a restarted manager finds them
    again through their run locks.
    """

    def __init__(self, root: Path | str | None = None, max_concurrent: int | None = None,
                 poll_s: float = 0.5, start: bool = True, kill_grace_s: float = KILL_GRACE_S):
        self.root = runs_root(root)
        self.gpus = local.gpu_ids()  # looked up here, so a test can fake the machine
        self.max_concurrent = max_concurrent if max_concurrent is not None else max(1, len(self.gpus))
        if self.max_concurrent < 1:
            raise ValueError(f"max_concurrent must be >= 1, got {self.max_concurrent}")
        self.runner = LocalRunner(self.max_concurrent, self.gpus, kill_grace_s, admit=self._admit)
        self.threads, self.poll_s, self.kill_grace_s = self.runner.threads, poll_s, kill_grace_s
        self.remote = RemoteRuns(self.root)
        self.cursors = MetricCursors()
        self._lock = threading.RLock()
        self._last_queued = 0.0
        self._stop = threading.Event()
        self._closed = False
        self._thread: threading.Thread | None = None
        self._recover()
        if start:
            self._thread = threading.Thread(target=self._loop, name="job-scheduler", daemon=True)
            self._thread.start()

    def _recover(self) -> None:
        """Rebuild the queue, the runs other processes train and the cluster runs from disk."""
        found = recover(self.root)
        with self._lock:
            for launch, ranks in found.queued:
                self.runner.submit(launch, ranks)
            self.runner.external.update({run.path: run for run in found.external})
            for run in found.remote:
                self.remote.follow(run)

    # submit ----------------------------------------------------------------------------------
    def submit(self, experiment: str, preset: str, variants: list[str], seeds: list[int],
               steps: int | None = None, overrides: list[str] | None = None,
               data: str | None = None, trackers: list[str] | None = None, executor: str = "local",
               resources: Resources | None = None) -> list[str]:
        """Queue the variants x seeds grid; return the names of the runs newly queued.

        Everything is validated before anything is written (ValueError): names, preset, variants,
        seeds, overrides, trackers, and that no run folder holds a different config. Completed,
        queued and running runs are skipped; failed or cancelled ones are queued again (and resume
        from their checkpoint when they have one). Each run mirrors its metrics to `trackers`
        (names of core.trackers.BACKENDS), which are not part of its config. With
        ``executor="slurm"`` the runs become one job array asking for `resources` (checked against
        the cluster first); locally `resources` may ask for several ranks (GPUs) per run.
        """
        validate_name(experiment, "experiment name")
        _check_seeds(list(seeds))
        cells = grid(preset, list(variants), list(seeds), list(overrides or []), steps, data)
        return self.submit_cells(experiment, cells, trackers, executor, resources)

    def submit_cells(self, experiment: str, cells: list[Cell], trackers: list[str] | None = None,
                     executor: str = "local", resources: Resources | None = None) -> list[str]:
        """Queue planned `cells` (a grid, or a study's phase) as :meth:`submit` queues a grid."""
        validate_name(experiment, "experiment name")
        mirrors = list(parse_backends(trackers))
        if executor not in EXECUTORS:
            raise ValueError(f"executor must be one of {', '.join(EXECUTORS)}, got {executor!r}")
        cells = _unique_cells(list(cells))
        resources = check_slurm(resources or Resources()) if executor == "slurm" else \
            (resources or Resources()).check()
        with self._lock:
            if self._closed:
                raise RuntimeError("this job manager has been shut down")
            runs = [Run.at(self.root, experiment, cell.name) for cell in cells]
            for cell, run in zip(cells, runs, strict=True):
                run.check_config(cell.config)
            todo = [(cell, run) for cell, run in zip(cells, runs, strict=True) if self._startable(run)]
            if executor == "slurm":
                return self.remote.submit(experiment, todo, mirrors, resources)
            return [self._enqueue(cell, run, mirrors, resources.ranks()) for cell, run in todo]

    def _startable(self, run: Run) -> bool:
        """Not completed, queued or training anywhere we know of."""
        if self.runner.job_for(run.path) or run.path in self.runner.external or self.remote.knows(run):
            return False
        # A queued run not in our queue belongs to another manager; a held lock is a live trainer.
        return run.read_status().get("state") not in ("completed", "queued") and not run.is_alive()

    def _enqueue(self, cell: Cell, run: Run, trackers: list[str], ranks: int) -> str:
        if run.read_config() is None:
            run.write_config(run_record(cell.config, self._device_name(cell), ranks))
        self._last_queued = max(time.time(), self._last_queued + 1e-6)  # keeps submit order
        # The trackers sit beside the flags, not in them: they are no part of the run's identity.
        run.write_status("queued", queued_at=self._last_queued, flags=cell.flags, trackers=trackers,
                         ranks=ranks, error=None, pid=None, executor="local", job_id=None, devices=None)
        self.runner.submit(Launch(run, tuple(cell.flags), tuple(trackers)), ranks)
        return run.name

    def _device_name(self, cell: Cell) -> str:
        name = cell.config.train.device
        return ("cuda" if self.gpus else "cpu") if name == "auto" else name

    # scheduling ------------------------------------------------------------------------------
    def tick(self) -> None:
        """One scheduler pass: reap finished children, then start queued runs up to the limit."""
        with self._lock:
            if self._closed:
                return
            for job in self.runner.pump():
                if job.lost_race:  # another process trains the run: it holds a slot while it does
                    self.runner.external[job.launch.run.path] = job.launch.run
        self.remote.poll()  # outside the lock: squeue may take a while

    def _admit(self, job: Job) -> bool:
        """Right before a queued run starts: still queued (not cancelled or finished by another
        manager), and nobody else trains it (else it holds a slot as an external run)."""
        run = job.launch.run
        if run.read_status().get("state") != "queued":
            return False
        if run.is_alive():
            self.runner.external[run.path] = run  # another manager launched it first
            return False
        return True

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:  # a full disk or a vanished folder must not end the scheduler
                log.exception("job scheduler pass failed")
            self._stop.wait(self.poll_s)

    # cancel ----------------------------------------------------------------------------------
    def cancel(self, experiment: str, run: str) -> str:
        """Cancel a queued or running run; return the state it has or will soon have.

        A queued run is marked cancelled and never starts. A running one gets SIGTERM (its process
        group), so the trainer records "cancelled" itself; our own children are killed if they
        outlast the grace period. Anything else raises ValueError.
        """
        target = Run.at(self.root, experiment, run)
        with self._lock:
            job = self.runner.job_for(target.path)
            if job is not None:
                self.runner.cancel(job.id)
                return "cancelled"
            if not target.exists():
                raise ValueError(f"no run {experiment}/{run}")
            status = target.read_status()
            if status.get("executor") == "slurm" and status.get("job_id"):
                return self.remote.cancel(target, status)
            return self._cancel_on_disk(target)

    def _cancel_on_disk(self, run: Run) -> str:
        """A run this manager does not hold: another process's, or another manager's queued one."""
        status = run.read_status()
        state = status.get("state", "queued")
        if run.is_alive():
            return _terminate_pid(run, status)
        if state == "queued":
            run.write_status("cancelled", error="cancelled before it started")
            return "cancelled"
        shown = "failed (orphaned)" if state == "running" else state
        raise ValueError(f"run {run.experiment}/{run.name} is {shown}: only queued or running runs "
                         "can be cancelled")

    # status ----------------------------------------------------------------------------------
    def status(self, experiment: str | None = None) -> list[dict]:
        """One row per run (of `experiment`, or of every experiment) for the UI.

        Keys: experiment, run, variant, seed, state (effective; a cluster run's merged with the
        scheduler's, e.g. "pending (Resources)"), live (queued, pending or running), job (the
        SLURM job id, if any), step, steps, progress (0..1), eta_s (seconds left, while running),
        train_loss and val_loss (the last logged), health (the alarms of core.health at the last
        evaluation), error.
        Metrics are read incrementally.
        """
        experiments = [validate_name(experiment, "experiment name")] if experiment else \
            list_experiments(self.root)
        return [self._row(run) for name in experiments for run in list_runs(self.root, name)]

    def _row(self, run: Run) -> dict:
        status = run.read_status()
        remote = status.get("executor") == "slurm"
        state = self.remote.state(run, status) if remote else run.effective_state()
        return row(run, status, state, self.cursors.read(run, status), not is_final(state))

    def active(self) -> dict[str, str]:
        """Runs holding a slot, "experiment/run" -> "child" (ours) or "external" (another process)."""
        with self._lock:
            rows = {f"{j.launch.run.experiment}/{j.launch.run.name}": "child"
                    for j in self.runner.running.values()}
            rows.update({f"{r.experiment}/{r.name}": "external" for r in self.runner.external.values()})
            return rows

    def queue(self) -> list[str]:
        """Queued runs as "experiment/run", in the order they will start."""
        with self._lock:
            return [f"{j.launch.run.experiment}/{j.launch.run.name}" for j in self.runner.pending]

    # shutdown --------------------------------------------------------------------------------
    def shutdown(self, cancel_running: bool = False, timeout: float | None = None) -> None:
        """Stop the scheduler. Children keep training unless `cancel_running` (SIGTERM, SIGKILL
        after `timeout` or the grace period); queued runs stay queued on disk for the next manager."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        with self._lock:
            self._closed = True
            if cancel_running:
                self.runner.stop(timeout)
            self.runner.detach()
