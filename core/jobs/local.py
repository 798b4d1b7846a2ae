"""The one place that starts training processes, and the job runner's local backend.

:func:`spawn` starts one node's share of a run (``core.train``, or torchrun around it for several
ranks) for every caller: the local runner below (behind ``core.sweep``, the studies and the app's
job manager) and the SLURM task on a compute node; :func:`run_to_end` runs the short
``core.train --time-steps`` calibrations of the wall-time estimates. Every child leads its own
session, so a cancel reaches its whole process group (torchrun's agent and ranks) and the child
outlives an app that restarts.

:class:`LocalRunner` queues runs on this machine: at most `parallel` at a time, each pinned to its
own GPUs (one per rank, adjacent) while any are present; a run waits in the queue while the GPUs it
needs are busy. Cancel is SIGTERM to the child's group (the trainer ends the run as ``cancelled``),
then SIGKILL after a grace period. A child that ends without a final status gets one here.

Torch-free at import (GPU discovery imports torch when first asked).
"""

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from core.jobs.launch import PREEMPT_SIGNAL, Launch, Resources, task_command, train_env
from core.lifecycle import LIVE_STATES
from core.runs import Run

KILL_GRACE_S = 30.0  # seconds a cancelled run has to write its status before SIGKILL
REPO = Path(__file__).resolve().parents[2]


def gpu_ids() -> list[str]:
    """The GPUs a child may be pinned to, as CUDA_VISIBLE_DEVICES entries of this process."""
    try:
        import torch  # CUDA's device count, asked once per runner
    except ImportError:
        return []
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    # Honour a CUDA_VISIBLE_DEVICES this process was started with: index i means its i-th entry.
    visible = [d.strip() for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    return visible[:count] if len(visible) >= count > 0 else [str(i) for i in range(count)]


def _child_setup() -> None:
    """In the child before exec: ignore SIGUSR1 until the trainer installs its own handler. SLURM
    signals every process of a step; torchrun's agent would die of it (the default action) and
    leave its ranks to be killed mid-checkpoint."""
    signal.signal(getattr(signal, f"SIG{PREEMPT_SIGNAL}"), signal.SIG_IGN)


@dataclass
class Child:
    """A training process started by :func:`spawn` (the leader of its own process group)."""

    run: Run
    proc: subprocess.Popen
    log: IO[bytes] | None
    devices: list[str] | None = None
    cancelled_at: float | None = None  # when SIGTERM was sent
    killed: bool = False  # SIGKILL followed

    def terminate(self) -> None:
        """Cancel: SIGTERM to the whole group; the trainer records "cancelled" itself."""
        if self.cancelled_at is None:
            self.cancelled_at = time.time()
            signal_group(self.proc.pid, signal.SIGTERM)

    def kill_if_overdue(self, grace_s: float) -> None:
        """SIGKILL the group once a cancel has gone unanswered for `grace_s` seconds."""
        if self.cancelled_at is not None and not self.killed and time.time() - self.cancelled_at > grace_s:
            self.killed = True
            signal_group(self.proc.pid, signal.SIGKILL)

    def close(self) -> None:
        if self.log is not None:
            self.log.close()  # the child keeps its own copy of the descriptor


def signal_group(pid: int, sig: int) -> None:
    """Signal the process group `pid` leads (a child of :func:`spawn`)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def spawn(launch: Launch, resources: Resources, threads: int, devices: list[str] | None = None,
          header: str = "launching", rendezvous: str | None = None, rdzv_id: str = "run",
          log: bool = True, ignore_preempt: bool = False) -> Child:
    """Start one node's share of `launch` (the only ``Popen`` of a training process).

    Resumes when the run has a checkpoint (:meth:`Run.resumes`); pins `devices` through
    CUDA_VISIBLE_DEVICES; appends ``--- <time> <header>: <command>`` and the child's output to
    train.log (`log` False: to this process's own output, e.g. a SLURM node other than the first).
    `ignore_preempt`: start with SIGUSR1 ignored (under SLURM, where it reaches every process; a
    hook run before exec, which a multi-threaded caller avoids where it can)."""
    command = task_command(launch, resources, threads, launch.run.resumes(), rendezvous, rdzv_id)
    env = train_env(threads)
    if devices is not None:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(devices)
    handle = launch.run.open_log() if log else None
    try:
        if handle is not None:
            handle.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} {header}: {' '.join(command)}\n".encode())
            handle.flush()
        proc = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, stdout=handle,
                                stderr=subprocess.STDOUT if handle else None, start_new_session=True,
                                preexec_fn=_child_setup if ignore_preempt else None)
    except BaseException:
        if handle is not None:
            handle.close()
        raise
    return Child(launch.run, proc, handle, devices)


def run_to_end(command: list[str], timeout: float) -> subprocess.CompletedProcess:
    """Run a short ``core.train`` command that writes no run (``--time-steps``, ``--plan``) to its
    end, capturing its output; subprocess.TimeoutExpired past `timeout` seconds (the child killed)."""
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, start_new_session=True)


def exit_message(run: Run, code: int) -> str:
    """Why a child that wrote no final status ended, with the last line it printed."""
    if code >= 0:
        how = f"exited with code {code}"
    else:
        try:
            how = f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            how = f"was killed by signal {-code}"
    tail = run.log_tail()
    return f"the training process {how} without a final status" + (f": {tail}" if tail else "")


def settle(child: Child, code: int) -> bool:
    """Give a run whose process ended without a final status one. Returns False when another
    process holds the run's lock (our child lost the race and wrote nothing): leave it alone."""
    run = child.run
    if run.read_status().get("state", "queued") not in LIVE_STATES:
        return True  # the trainer recorded completed / failed / cancelled / preempted itself
    if run.is_alive():
        return False
    if child.cancelled_at is not None:
        killed = " (killed after the grace period)" if child.killed else ""
        run.write_status("cancelled", error=f"cancelled{killed}")
    else:
        run.write_status("failed", error=exit_message(run, code))
    return True


@dataclass(eq=False)  # a job is itself: identity, not equal fields
class Job:
    """One run in the local runner: pending, then running, then ended."""

    id: str
    launch: Launch
    ranks: int = 1
    state: str = "pending"  # the scheduler's words: pending, running, completed, failed, cancelled
    child: Child | None = None
    code: int | None = None  # the exit code once ended
    lost_race: bool = False  # ended because another process trains the run (it holds the lock)


@dataclass
class LocalRunner:
    """Runs on this machine, `parallel` at a time, each with cores/parallel CPU threads (split over
    its ranks) and its own GPUs. Call :meth:`pump` periodically; it returns the jobs that ended.

    `admit(job)` is asked right before a job starts (False: drop it, it is no longer ours to run).
    `external` holds runs other processes train: each takes a slot and the GPUs its status names."""

    parallel: int = 1
    gpus: list[str] | None = None  # None: discovered when the first job starts
    kill_grace_s: float = KILL_GRACE_S
    admit: Callable[[Job], bool] = lambda job: True
    pending: list[Job] = field(default_factory=list)
    running: dict[str, Job] = field(default_factory=dict)
    jobs: dict[str, Job] = field(default_factory=dict)
    external: dict[Path, Run] = field(default_factory=dict)

    def __post_init__(self):
        if self.parallel < 1:
            raise ValueError(f"parallel runs must be >= 1, got {self.parallel}")
        self.threads = max(1, (os.cpu_count() or 1) // self.parallel)

    def devices(self) -> list[str]:
        """This machine's GPUs (CUDA_VISIBLE_DEVICES entries), asked once, when first needed."""
        if self.gpus is None:
            self.gpus = gpu_ids()  # not when the runner is made: a sweep that is refused never asks
        return self.gpus

    # queue -----------------------------------------------------------------------------------------
    def submit(self, launch: Launch, ranks: int = 1) -> Job:
        """Queue `launch` (`ranks` training processes: torchrun when more than one)."""
        job = Job(f"local-{len(self.jobs)}", launch, ranks)
        self.jobs[job.id] = job
        self.pending.append(job)
        return job

    def job_for(self, path: Path) -> Job | None:
        """The pending or running job of the run folder `path`."""
        return next((j for j in [*self.running.values(), *self.pending] if j.launch.run.path == path), None)

    def cancel(self, job_id: str) -> None:
        """A pending job never starts (a run queued on disk is marked cancelled); a running one gets
        SIGTERM, then SIGKILL after the grace period."""
        job = self.jobs[job_id]
        if job in self.pending:
            self.pending.remove(job)
            job.state = "cancelled"
            run = job.launch.run
            if run.read_status().get("state") == "queued":
                run.write_status("cancelled", error="cancelled before it started")
        elif job.child is not None and job.state == "running":
            job.child.terminate()

    # supervision -----------------------------------------------------------------------------------
    def pump(self) -> list[Job]:
        """Reap ended children, SIGKILL overdue cancels, start pending jobs while slots and GPUs
        allow; return the jobs that ended in this pass."""
        ended = [job for job in list(self.running.values()) if self._reap(job)]
        for job in self.running.values():
            job.child.kill_if_overdue(self.kill_grace_s)
        for path, run in list(self.external.items()):
            if not run.is_alive():
                del self.external[path]
        self._start_pending()
        return ended

    def _reap(self, job: Job) -> bool:
        code = job.child.proc.poll()
        if code is None:
            return False
        job.child.close()
        del self.running[job.id]
        job.code = code
        job.state = "completed" if code == 0 else "failed"
        job.lost_race = not settle(job.child, code)
        return True

    def _start_pending(self) -> None:
        while self.pending and len(self.running) + len(self.external) < self.parallel:
            job = self.pending[0]
            if self._too_big(job):
                continue
            devices = self._free_devices(job.ranks)
            if devices is False:
                return  # its GPUs are busy: it waits (in order) until they come free
            self.pending.pop(0)
            if self.admit(job):
                self._start(job, devices)
            else:
                job.state = "cancelled"

    def _start(self, job: Job, devices: list[str] | None) -> None:
        run = job.launch.run
        if devices is not None:  # kept by the trainer's later writes: a restarted app sees the GPUs
            run.write_status(run.read_status().get("state", "queued"), devices=devices)
        threads = max(1, self.threads // job.ranks)
        try:
            job.child = spawn(job.launch, Resources(ranks_per_run=job.ranks), threads, devices,
                              ignore_preempt=job.ranks > 1)
        except OSError as error:
            run.write_status("failed", error=f"could not start the training process: {error}")
            job.state, job.code = "failed", 1
            return
        job.state = "running"
        self.running[job.id] = job

    def _too_big(self, job: Job) -> bool:
        """Fail (and drop) a job that needs more GPUs than this machine has: it would wait forever."""
        gpus = self.devices()
        if not gpus or job.ranks <= len(gpus):
            return False
        self.pending.remove(job)
        job.state, job.code = "failed", 1
        job.launch.run.write_status("failed", error=f"a run of {job.ranks} ranks needs {job.ranks} GPUs; "
                                    f"this machine has {len(gpus)}")
        return True

    def _free_devices(self, ranks: int) -> list[str] | None | bool:
        """`ranks` adjacent free GPUs; None on a machine without GPUs; False while they are busy."""
        gpus = self.devices()
        if not gpus:
            return None
        busy = {d for job in self.running.values() for d in (job.child.devices or [])}
        busy |= {d for run in self.external.values() for d in _status_devices(run, gpus)}
        for first in range(len(gpus) - ranks + 1):
            window = gpus[first:first + ranks]
            if not busy.intersection(window):
                return window
        return False

    # the end ---------------------------------------------------------------------------------------
    def stop(self, grace_s: float | None = None) -> None:
        """Cancel every running child, SIGKILL those that outlast `grace_s`, settle them all."""
        grace_s = self.kill_grace_s if grace_s is None else grace_s
        jobs = list(self.running.values())
        for job in jobs:
            job.child.terminate()
        deadline = time.time() + grace_s
        for job in jobs:
            try:
                job.child.proc.wait(max(0.0, deadline - time.time()))
            except subprocess.TimeoutExpired:
                job.child.killed = True
                signal_group(job.child.proc.pid, signal.SIGKILL)
                job.child.proc.wait()
            self._reap(job)

    def detach(self) -> None:
        """Forget the children without stopping them (they keep training and writing their status)."""
        for job in self.running.values():
            job.child.close()
        self.running.clear()


def _status_devices(run: Run, gpus: list[str]) -> list[str]:
    """The GPUs another process's run is pinned to, from its status (an older app wrote `gpu`, an
    index into its GPU list)."""
    status = run.read_status()
    devices = status.get("devices")
    if isinstance(devices, list):
        return [str(d) for d in devices]
    old = status.get("gpu")
    return [gpus[old]] if isinstance(old, int) and 0 <= old < len(gpus) else []
