"""Job control for the app: a queue of ``core.train`` subprocesses or SLURM jobs, cancel, and
live status.

The truth lives on disk (status.json and run.lock, through core.runs), so a restarted app finds
queued, running and finished runs again and launches nothing twice. In memory the manager only
keeps what it launched itself, runs other processes are training (they hold a slot while their
lock is held), the queue, and a metrics cursor per run for cheap polling.

Runs given to SLURM (``executor="slurm"``) queue on the cluster instead: their status.json names
the job, the manager asks squeue once per pass and merges its word with the run's own record
(core.jobs.executors.merge_state); their liveness is the scheduler's plus the trainer's heartbeat,
never a lock or a pid (neither means anything across machines).
"""

import contextlib
import logging
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from core.config import RunConfig
from core.jobs.executors import (
    EXECUTORS,
    FINAL_STATES,
    SLURM_POLL_S,
    Launch,
    Resources,
    SlurmExecutor,
    check_slurm,
    is_final,
    merge_state,
    scancel,
    slurm_states,
    submit_runs,
)
from core.jobs.launch import Cell, grid, run_record, train_command, train_env
from core.metrics import TRAIN_LOSS, VAL_LOSS
from core.runs import Run, list_experiments, list_runs, runs_root, slurm_folder, validate_name
from core.trackers import parse_backends

ORPHANED = "orphaned: the training process ended without a final status"
LIVE_STATES = ("queued", "running")
log = logging.getLogger(__name__)


@dataclass
class _Child:
    """A training subprocess this manager started."""

    run: Run
    proc: subprocess.Popen
    log: IO[bytes]
    gpu: int | None
    cancelled_at: float | None = None  # when SIGINT was sent
    killed: bool = False


@dataclass
class _Cursor:
    """What status() has read of one run's metrics.jsonl so far."""

    started: float | None
    offset: int = 0
    step: int | None = None
    train_loss: float | None = None
    val_loss: float | None = None


def eta_seconds(status: dict, state: str, step: int, steps: int | None) -> float | None:
    """Seconds a running run has left at its pace since it last (re)started; None otherwise."""
    started, first = status.get("started"), status.get("start_step") or 0
    if state != "running" or not steps or not started or step <= first:
        return None
    return (time.time() - started) / (step - first) * (steps - step)


def gpu_ids() -> list[str]:
    """The GPUs a child may be pinned to, as CUDA_VISIBLE_DEVICES entries of this process."""
    import torch  # CUDA's device count: asked once, when a job manager starts

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    # Honour a CUDA_VISIBLE_DEVICES the app was started with: index i means its i-th entry.
    visible = [d.strip() for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    return visible[:count] if len(visible) >= count > 0 else [str(i) for i in range(count)]


def _exit_message(run: Run, code: int) -> str:
    if code >= 0:
        how = f"exited with code {code}"
    else:
        try:
            how = f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            how = f"was killed by signal {-code}"
    tail = run.log_tail()
    return f"the training process {how} without a final status" + (f": {tail}" if tail else "")


def _check_seeds(seeds: list[int]) -> None:
    bad = [s for s in seeds if isinstance(s, bool) or not isinstance(s, int) or s < 0]
    if bad:
        raise ValueError(f"seeds must be non-negative integers, got {bad!r}")


def _check_config(cell: Cell, run: Run) -> None:
    stored = run.read_config()
    if stored is not None and RunConfig.from_dict(stored) != cell.config:
        raise ValueError(f"run folder {run.experiment}/{run.name} holds a different config; "
                         "choose another experiment name")


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    """Signal a child's whole process group (it leads its own session)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def _interrupt_pid(run: Run, status: dict) -> str:
    """SIGINT the process another manager (or a CLI) runs; the held lock proves it is alive."""
    pid = status.get("pid")
    if status.get("state") != "running" or not isinstance(pid, int) or pid <= 0:
        raise ValueError(f"run {run.experiment}/{run.name} is being started by another process; "
                         "try again in a moment")
    try:
        os.kill(pid, signal.SIGINT)
    except (ProcessLookupError, PermissionError) as error:
        raise ValueError(f"cannot interrupt process {pid} training {run.experiment}/{run.name}: "
                         f"{error.strerror}") from None
    return "cancelled"


def _unique_cells(cells: list[Cell]) -> list[Cell]:
    """Keep the first cell of each run name (two spellings of one variant are one run)."""
    seen: dict[str, Cell] = {}
    for cell in cells:
        seen.setdefault(cell.name, cell)
    return list(seen.values())


class JobManager:
    """Queue, launch, cancel and report training runs under one runs root.

    All state is guarded by one lock, so the app may call every method from several threads.
    Children are started in their own session: they outlive the app, and a restarted manager
    finds them again through their run locks.
    """

    def __init__(self, root: Path | str | None = None, max_concurrent: int | None = None,
                 poll_s: float = 0.5, start: bool = True, kill_grace_s: float = 30.0):
        self.root = runs_root(root)
        self.gpus = gpu_ids()
        self.max_concurrent = max_concurrent if max_concurrent is not None else max(1, len(self.gpus))
        if self.max_concurrent < 1:
            raise ValueError(f"max_concurrent must be >= 1, got {self.max_concurrent}")
        self.threads = max(1, (os.cpu_count() or 1) // self.max_concurrent)
        self.poll_s, self.kill_grace_s = poll_s, kill_grace_s
        self._lock = threading.RLock()
        self._cursor_lock = threading.Lock()
        self._queue: list[Run] = []
        self._children: dict[Path, _Child] = {}
        self._external: dict[Path, Run] = {}  # runs other processes train; each holds a slot
        self._remote: dict[Path, Run] = {}  # runs queued or running on SLURM, not yet ended
        self._scheduler: dict[str, tuple[str, str]] = {}  # job id: (state, reason) at the last poll
        self._polled_at = 0.0  # when squeue was last asked
        self._cursors: dict[Path, _Cursor] = {}
        self._last_queued = 0.0
        self._stop = threading.Event()
        self._closed = False
        self._thread: threading.Thread | None = None
        self._recover()
        if start:
            self._thread = threading.Thread(target=self._loop, name="job-scheduler", daemon=True)
            self._thread.start()

    # recovery --------------------------------------------------------------------------------
    def _recover(self) -> None:
        """Rebuild the queue and the live set from disk (called once at start)."""
        queued = []
        with self._lock:
            for experiment in list_experiments(self.root):
                for run in list_runs(self.root, experiment):
                    status = run.read_status()
                    if status.get("executor") == "slurm":
                        if status.get("state") in ("queued", "running", "preempted"):
                            self._remote[run.path] = run  # the cluster runs it: follow, never relaunch
                    elif status.get("state") == "queued" and isinstance(status.get("flags"), list):
                        queued.append((status.get("queued_at") or 0.0, run.name, run))
                    elif status.get("state") == "running":
                        self._adopt_running(run)
            queued.sort(key=lambda item: (item[0], item[1]))
            self._queue = [run for *_, run in queued]

    def _adopt_running(self, run: Run) -> None:
        if run.is_alive():
            self._external[run.path] = run  # another (older) process trains it: leave it alone
        else:
            run.write_status("failed", error=ORPHANED)

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
        the cluster first).
        """
        validate_name(experiment, "experiment name")
        _check_seeds(list(seeds))
        mirrors = list(parse_backends(trackers))
        if executor not in EXECUTORS:
            raise ValueError(f"executor must be one of {', '.join(EXECUTORS)}, got {executor!r}")
        cells = _unique_cells(grid(preset, list(variants), list(seeds), list(overrides or []),
                                   steps, data))
        if executor == "slurm":
            resources = check_slurm(resources or Resources())
        with self._lock:
            if self._closed:
                raise RuntimeError("this job manager has been shut down")
            runs = [Run.at(self.root, experiment, cell.name) for cell in cells]
            for cell, run in zip(cells, runs, strict=True):
                _check_config(cell, run)
            if executor == "slurm":
                return self._submit_remote(experiment, cells, runs, mirrors, resources)
            return [run.name for cell, run in zip(cells, runs, strict=True)
                    if self._enqueue(cell, run, mirrors)]

    def _submit_remote(self, experiment: str, cells: list[Cell], runs: list[Run], trackers: list[str],
                       resources: Resources) -> list[str]:
        todo = [(cell, run) for cell, run in zip(cells, runs, strict=True) if self._startable(run)]
        device = "cuda" if resources.gpus_per_run else "cpu"
        for cell, run in todo:
            if run.read_config() is None:
                run.write_config(run_record(cell.config, device, resources.ranks()))
        launches = [Launch(run, tuple(cell.flags), tuple(trackers)) for cell, run in todo]
        submit_runs(SlurmExecutor(slurm_folder(self.root, experiment), resources, experiment), launches)
        for _, run in todo:
            self._remote[run.path] = run
        return [run.name for _, run in todo]

    def _startable(self, run: Run) -> bool:
        """Not completed, queued or training anywhere we know of."""
        known = (self._children, self._external, self._remote)
        if any(run.path in each for each in known) or self._in_queue(run):
            return False
        # A queued run not in our queue belongs to another manager; a held lock is a live trainer.
        return run.read_status().get("state") not in ("completed", "queued") and not run.is_alive()

    def _enqueue(self, cell: Cell, run: Run, trackers: list[str]) -> bool:
        if not self._startable(run):
            return False
        if run.read_config() is None:
            run.write_config(run_record(cell.config, self._device_name(cell.config)))
        self._last_queued = max(time.time(), self._last_queued + 1e-6)  # keeps submit order
        # The trackers sit beside the flags, not in them: they are no part of the run's identity.
        run.write_status("queued", queued_at=self._last_queued, flags=cell.flags, trackers=trackers,
                         error=None, pid=None, executor="local", job_id=None)
        self._queue.append(run)
        return True

    def _device_name(self, config: RunConfig) -> str:
        name = config.train.device
        return ("cuda" if self.gpus else "cpu") if name == "auto" else name

    def _in_queue(self, run: Run) -> bool:
        return any(queued.path == run.path for queued in self._queue)

    # scheduling ------------------------------------------------------------------------------
    def tick(self) -> None:
        """One scheduler pass: reap finished children, then start queued runs up to the limit."""
        with self._lock:
            if self._closed:
                return
            self._reap()
            self._escalate()
            for path, run in list(self._external.items()):
                if not run.is_alive():
                    del self._external[path]
            while self._queue and len(self._children) + len(self._external) < self.max_concurrent:
                self._launch(self._queue.pop(0))
        self._poll_remote()  # outside the lock: squeue may take a while

    def _poll_remote(self) -> None:
        """Ask squeue about our cluster runs; settle those that ended without a final status."""
        with self._lock:
            runs = list(self._remote.values())
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
            self._scheduler.update(states)
            for run in runs:
                status = run.read_status()
                merged = merge_state(status, *states.get(status.get("job_id"), ("unknown", "")))
                if is_final(merged):
                    self._settle_remote(run, status, merged)

    def _settle_remote(self, run: Run, status: dict, merged: str) -> None:
        self._remote.pop(run.path, None)
        ended = merged.split()[0]
        if status.get("state") != ended:  # the job ended before the trainer could say how
            run.write_status(ended, error=merged)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:  # a full disk or a vanished folder must not end the scheduler
                log.exception("job scheduler pass failed")
            self._stop.wait(self.poll_s)

    def _launch(self, run: Run) -> None:
        status = run.read_status()
        if status.get("state") != "queued":
            return  # cancelled or finished by another manager since it was queued
        if run.is_alive():
            self._external[run.path] = run  # another manager launched it first
            return
        flags, trackers = status.get("flags"), status.get("trackers") or []
        if not all(isinstance(v, list) and all(isinstance(f, str) for f in v) for v in (flags, trackers)):
            run.write_status("failed", error="queued without valid training flags")
            return
        gpu = self._free_gpu()
        run.write_status("queued", gpu=gpu)  # kept by train's later writes: a restart sees it
        try:
            self._children[run.path] = self._spawn(run, flags, gpu, trackers)
        except OSError as error:
            run.write_status("failed", error=f"could not start the training process: {error}")

    def _spawn(self, run: Run, flags: list[str], gpu: int | None, trackers: list[str]) -> _Child:
        command = train_command(run, flags, self.threads, run.checkpoint_dir() is not None, trackers)
        env = train_env(self.threads)
        if gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = self.gpus[gpu]
        handle = run.open_log()  # closed when the child is reaped
        try:
            handle.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} launching: {' '.join(command)}\n"
                         .encode())
            handle.flush()
            proc = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, stdout=handle,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        except BaseException:
            handle.close()
            raise
        return _Child(run, proc, handle, gpu)

    def _free_gpu(self) -> int | None:
        """The GPU with the fewest of our and other processes' runs on it (None on CPU)."""
        if not self.gpus:
            return None
        load = [0] * len(self.gpus)
        others = [run.read_status().get("gpu") for run in self._external.values()]
        for gpu in [child.gpu for child in self._children.values()] + others:
            if isinstance(gpu, int) and 0 <= gpu < len(load):
                load[gpu] += 1
        return load.index(min(load))

    def _reap(self) -> None:
        for path, child in list(self._children.items()):
            code = child.proc.poll()
            if code is None:
                continue
            child.log.close()
            del self._children[path]
            self._settle(child, code)

    def _settle(self, child: _Child, code: int) -> None:
        """Give a run whose process ended without a final status one; never touch another's run."""
        run = child.run
        if run.read_status().get("state") not in LIVE_STATES:
            return  # train recorded completed / failed / cancelled itself
        if run.is_alive():
            # Our child lost the lock race ("being trained by another process") and wrote nothing.
            self._external[run.path] = run
        elif child.cancelled_at is not None:
            killed = " (killed after the grace period)" if child.killed else ""
            run.write_status("cancelled", error=f"cancelled{killed}")
        else:
            run.write_status("failed", error=_exit_message(run, code))

    def _escalate(self) -> None:
        for child in self._children.values():
            overdue = child.cancelled_at is not None and not child.killed and \
                time.time() - child.cancelled_at > self.kill_grace_s
            if overdue:
                child.killed = True
                _signal_group(child.proc, signal.SIGKILL)

    # cancel ----------------------------------------------------------------------------------
    def cancel(self, experiment: str, run: str) -> str:
        """Cancel a queued or running run; return the state it has or will soon have.

        A queued run is marked cancelled and never starts. A running one gets SIGINT, so the
        trainer records "cancelled" itself; our own children are killed if they outlast the
        grace period. Anything else raises ValueError.
        """
        target = Run.at(self.root, experiment, run)
        with self._lock:
            child = self._children.get(target.path)
            if child is not None:
                if child.cancelled_at is None:
                    child.cancelled_at = time.time()
                    _signal_group(child.proc, signal.SIGINT)
                return "cancelled"
            if not target.exists():
                raise ValueError(f"no run {experiment}/{run}")
            status = target.read_status()
            if status.get("executor") == "slurm" and status.get("job_id"):
                return self._cancel_remote(target, status)
            if self._in_queue(target):
                self._queue = [queued for queued in self._queue if queued.path != target.path]
            return self._cancel_on_disk(target)

    def _cancel_remote(self, run: Run, status: dict) -> str:
        """scancel the run's job; a run that never started is cancelled here, a running one by
        its trainer (SIGTERM)."""
        state = status.get("state")
        if state in FINAL_STATES:
            raise ValueError(f"run {run.experiment}/{run.name} is {state}: only queued or running runs "
                             "can be cancelled")
        scancel(status["job_id"])
        if state in ("queued", "preempted"):
            run.write_status("cancelled", error="cancelled before it started")
        return "cancelled"

    def _cancel_on_disk(self, run: Run) -> str:
        status = run.read_status()
        state = status.get("state", "queued")
        if run.is_alive():
            return _interrupt_pid(run, status)
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
        train_loss and val_loss (the last logged), error.
        Metrics are read incrementally.
        """
        experiments = [validate_name(experiment, "experiment name")] if experiment else \
            list_experiments(self.root)
        return [self._row(run) for name in experiments for run in list_runs(self.root, name)]

    def _row(self, run: Run) -> dict:
        config, status = run.read_config() or {}, run.read_status()
        if status.get("executor") == "slurm":
            state = self._remote_state(run, status)
        else:
            state = run.effective_state()
        cursor = self._read_metrics(run, status)
        steps = (config.get("train") or {}).get("steps")
        step = status.get("step") or cursor.step or 0
        progress = 1.0 if state == "completed" else min(1.0, step / steps) if steps else 0.0
        return {"experiment": run.experiment, "run": run.name, "variant": config.get("variant"),
                "seed": config.get("seed"), "state": state, "step": step, "steps": steps,
                "progress": progress, "eta_s": eta_seconds(status, state, step, steps),
                "live": not is_final(state), "job": status.get("job_id"),
                "train_loss": cursor.train_loss, "val_loss": cursor.val_loss, "error": status.get("error")}

    def _remote_state(self, run: Run, status: dict) -> str:
        """A cluster run's state: its status merged with squeue's last answer (the status alone
        before the first answer, or when the trainer wrote it after that answer)."""
        state = status.get("state", "queued")
        with self._lock:
            answer = self._scheduler.get(status.get("job_id")) if run.path in self._remote else None
            polled_at = self._polled_at
        if answer is None or (state == "running" and status.get("updated", 0) > polled_at):
            return state  # not asked yet, or the trainer spoke after squeue did
        return merge_state(status, *answer)

    def _read_metrics(self, run: Run, status: dict) -> _Cursor:
        """Fold the metric lines logged since the last call into the run's cached cursor."""
        with self._cursor_lock:
            cursor = self._cursors.get(run.path)
            # Each (re)start of train writes a new `started`; a resume may have rewritten metrics.
            if cursor is None or cursor.started != status.get("started"):
                cursor = self._cursors[run.path] = _Cursor(status.get("started"))
            records, offset = run.read_metrics(cursor.offset)
            if offset < cursor.offset:  # the file shrank under us: read_metrics started over
                cursor = self._cursors[run.path] = _Cursor(status.get("started"))
            cursor.offset = offset
            for record in records:
                cursor.step = record.get("step", cursor.step)
                cursor.train_loss = record.get(TRAIN_LOSS, cursor.train_loss)
                cursor.val_loss = record.get(VAL_LOSS, cursor.val_loss)
            return cursor

    def active(self) -> dict[str, str]:
        """Runs holding a slot, "experiment/run" -> "child" (ours) or "external" (another process)."""
        with self._lock:
            rows = {f"{c.run.experiment}/{c.run.name}": "child" for c in self._children.values()}
            rows.update({f"{r.experiment}/{r.name}": "external" for r in self._external.values()})
            return rows

    def queue(self) -> list[str]:
        """Queued runs as "experiment/run", in the order they will start."""
        with self._lock:
            return [f"{run.experiment}/{run.name}" for run in self._queue]

    # shutdown --------------------------------------------------------------------------------
    def shutdown(self, cancel_running: bool = False, timeout: float | None = None) -> None:
        """Stop the scheduler. Children keep training unless `cancel_running`; queued runs stay
        queued on disk for the next manager."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        with self._lock:
            self._closed = True
            children = list(self._children.values())
            if cancel_running:
                self._stop_children(children, self.kill_grace_s if timeout is None else timeout)
            for child in children:
                child.log.close()  # the child keeps its own copy of the descriptor
            self._children.clear()

    def _stop_children(self, children: list[_Child], grace: float) -> None:
        for child in children:
            child.cancelled_at = child.cancelled_at or time.time()
            _signal_group(child.proc, signal.SIGINT)
        deadline = time.time() + grace
        for child in children:
            try:
                child.proc.wait(max(0.0, deadline - time.time()))
            except subprocess.TimeoutExpired:
                child.killed = True
                _signal_group(child.proc, signal.SIGKILL)
                child.proc.wait()
            self._settle(child, child.proc.returncode)
