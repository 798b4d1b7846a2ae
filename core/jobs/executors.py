"""Where runs execute: processes on this machine, or a SLURM cluster through submitit.

An executor takes launches (a run folder, its ``core.train`` flags and trackers) and answers
``submit(launches) -> job ids``, ``state(ids) -> {id: scheduler state}`` and ``cancel(id)``.
Scheduler states are the words of :data:`STATES`; "unknown" means the scheduler no longer knows
the job, and the run's own status.json has the last word.

On SLURM a grid is one job array (at most ``array_parallelism`` tasks at once). Each task runs
one run: a single ``core.train`` process, or for several ranks one torchrun per node (the trainer
already joins torchrun's process group; multi-node runs meet through torchrun's c10d rendezvous
on the first node). The job asks for ``--signal=USR1@90``: SLURM's warning before a time limit or
a preemption reaches the trainer, which checkpoints and exits as "preempted"; submitit then
requeues the job, and the requeued task resumes from that checkpoint.

Torch-free: the trainer runs in the task's child process.
"""

import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

from core.jobs.launch import (
    PREEMPT_SIGNAL,
    RDZV_PORT,
    SIGNAL_DELAY_S,
    TIME_FORMATS,
    Launch,
    Resources,
    task_command,
    time_minutes,
)
from core.jobs.local import KILL_GRACE_S, LocalRunner, spawn
from core.lifecycle import FINAL_STATES

STATES = ("pending", "running", "completed", "failed", "cancelled", "preempted", "unknown")
EXECUTORS = ("local", "slurm")
SLURM_POLL_S = 5.0  # seconds between squeue calls (a busy controller must not be asked 5 times a second)

# SLURM's job states, in our words (squeue --states=all).
_SLURM_STATES = {
    "PENDING": "pending", "REQUEUED": "pending", "REQUEUE_HOLD": "pending", "REQUEUE_FED": "pending",
    "RESV_DEL_HOLD": "pending", "SUSPENDED": "pending", "CONFIGURING": "running", "RUNNING": "running",
    "COMPLETING": "running", "RESIZING": "running", "SIGNALING": "running", "STAGE_OUT": "running",
    "COMPLETED": "completed", "CANCELLED": "cancelled", "PREEMPTED": "preempted", "FAILED": "failed",
    "BOOT_FAIL": "failed", "DEADLINE": "failed", "NODE_FAIL": "failed", "OUT_OF_MEMORY": "failed",
    "TIMEOUT": "failed", "SPECIAL_EXIT": "failed", "REVOKED": "cancelled",
}
class Executor(Protocol):
    """Starts launches somewhere and reports on them by job id."""

    name: str
    poll_s: float  # seconds between state() calls while waiting

    def submit(self, launches: list[Launch]) -> list[str]: ...

    def state(self, ids: list[str]) -> dict[str, str]: ...

    def cancel(self, job_id: str) -> None: ...


# -- local ----------------------------------------------------------------------------------------
class LocalExecutor:
    """Processes of this machine through the shared local runner (core.jobs.local): `parallel` at a
    time, each with cores/parallel threads and its own GPUs (`resources.ranks()` per run: torchrun
    for more than one). Job ids are "local-N"; state() also starts queued launches as slots free."""

    name = "local"
    poll_s = 0.2  # seconds between state() calls while waiting

    def __init__(self, parallel: int = 1, resources: Resources | None = None,
                 kill_grace_s: float = KILL_GRACE_S, gpus: list[str] | None = None):
        if parallel < 1:
            raise ValueError("--parallel must be >= 1")
        self.runner = LocalRunner(parallel, gpus, kill_grace_s)
        resources = resources or Resources()
        self.ranks = resources.ranks()
        if resources.gpus_per_run > len(self.runner.devices() if resources.gpus_per_run else []):
            raise ValueError(f"{resources.gpus_per_run} GPUs per run asked; this machine has "
                             f"{len(self.runner.devices())}")

    @property
    def parallel(self) -> int:
        return self.runner.parallel

    @property
    def threads(self) -> int:
        return self.runner.threads

    @property
    def exit_codes(self) -> dict[str, int]:
        """Exit codes of the processes that ended, by job id."""
        return {job.id: job.code for job in self.runner.jobs.values() if job.code is not None}

    def submit(self, launches: list[Launch]) -> list[str]:
        ids = [self.runner.submit(launch, self.ranks).id for launch in launches]
        self.runner.pump()
        return ids

    def state(self, ids: list[str]) -> dict[str, str]:
        self.runner.pump()
        return {job_id: self.runner.jobs[job_id].state if job_id in self.runner.jobs else "unknown"
                for job_id in ids}

    def cancel(self, job_id: str) -> None:
        """SIGTERM to the run's process group (the trainer ends it as cancelled); SIGKILL after the
        grace period; a queued one never starts."""
        self.runner.cancel(job_id)
        self.runner.pump()

    def stop(self, grace_s: float | None = None) -> None:
        """Cancel everything still running and queued (a sweep interrupted with Ctrl-C)."""
        for job in list(self.runner.pending):
            self.runner.cancel(job.id)
        self.runner.stop(grace_s)


# -- SLURM ----------------------------------------------------------------------------------------
class TrainTask:
    """What a SLURM array task runs (pickled by submitit): one node's share of one run.

    On SIGUSR1 submitit calls `checkpoint`: the trainer got the same signal, so wait until it
    has saved its checkpoint and exited, then hand submitit this task again to requeue; the
    requeued task resumes from the checkpoint."""

    def __init__(self, launch: Launch, resources: Resources):
        self.launch, self.resources = launch, resources
        self._proc: subprocess.Popen | None = None

    def __getstate__(self) -> dict:
        return {"launch": self.launch, "resources": self.resources}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, _proc=None)

    def __call__(self) -> int:
        import submitit  # on the compute node

        env = submitit.JobEnvironment()
        run = self.launch.run
        # Other nodes than the first print to submitit's own log. The child's devices are SLURM's.
        child = spawn(self.launch, self.resources, self.resources.cpus_per_rank,
                      header=f"slurm job {env.job_id} on {env.hostname}",
                      rendezvous=f"{env.hostnames[0]}:{RDZV_PORT}", rdzv_id=str(env.job_id),
                      log=env.node == 0, ignore_preempt=True)
        self._proc = child.proc
        code = self._wait()
        child.close()
        if code != 0:
            raise RuntimeError(f"core.train exited with code {code}; see {run.file('train.log')}")
        return code

    def _wait(self, timeout: float | None = None) -> int | None:
        """Poll (never block in waitpid: submitit's signal handler polls the same child)."""
        deadline = None if timeout is None else time.time() + timeout
        while self._proc.poll() is None:
            if deadline is not None and time.time() > deadline:
                return None
            time.sleep(0.5)
        return self._proc.returncode

    def checkpoint(self):  # submitit's preemption hook
        import submitit

        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(getattr(signal, f"SIG{PREEMPT_SIGNAL}"))  # in case it missed it
            self._wait(SIGNAL_DELAY_S - 10)
        return submitit.helpers.DelayedSubmission(TrainTask(self.launch, self.resources))


def slurm_available() -> bool:
    """True when SLURM's sbatch is on PATH (the app offers the slurm executor then)."""
    return shutil.which("sbatch") is not None


def _slurm(*args: str) -> str:
    try:
        out = subprocess.run(list(args), capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        raise ValueError(f"the slurm executor needs SLURM's {args[0]} on PATH") from None
    except subprocess.TimeoutExpired:
        raise ValueError(f"{args[0]} did not answer within 60 s: is slurmctld up?") from None
    if out.returncode != 0:
        raise ValueError(f"{' '.join(args[:2])} failed: {(out.stderr or out.stdout).strip()}")
    return out.stdout


@dataclass(frozen=True)
class Partition:
    """What sinfo says of one partition (its largest node)."""

    name: str
    default: bool
    nodes: int
    cpus: int  # per node
    gpus: int  # per node
    minutes: int | None  # time limit (None: infinite)


def partitions() -> dict[str, Partition]:
    """The cluster's partitions from sinfo; ValueError when SLURM is not reachable."""
    found: dict[str, Partition] = {}
    for line in _slurm("sinfo", "--noheader", "--format=%P|%D|%c|%G|%l").splitlines():
        name, nodes, cpus, gres, limit = line.strip().split("|")
        default, name = name.endswith("*"), name.rstrip("*")
        gpus = max([int(g) for g in re.findall(r"gpu(?::[\w-]+)?:(\d+)", gres)] or [0])
        minutes = None if limit in ("infinite", "UNLIMITED", "n/a") else time_minutes(limit)
        old = found.get(name, Partition(name, default, 0, 0, 0, minutes))  # sinfo: a line per node kind
        found[name] = Partition(name, default, old.nodes + int(nodes), max(old.cpus, int(cpus.rstrip("+"))),
                                max(old.gpus, gpus), minutes)
    return found


def check_slurm(resources: Resources) -> Resources:
    """Check `resources` against the cluster before anything is submitted; return them with the
    partition filled in. ValueError: one message naming what does not fit."""
    resources.check()
    if not slurm_available():
        raise ValueError("the slurm executor needs SLURM's sbatch on PATH (run where jobs are submitted, "
                         "or choose the local executor)")
    known = partitions()
    if not known:
        raise ValueError("sinfo lists no partitions")
    name = resources.partition or next((p.name for p in known.values() if p.default), None)
    if name not in known:
        raise ValueError(f"unknown partition {name!r}; the cluster has {', '.join(sorted(known))}")
    part = known[name]
    if resources.gpus_per_node() > part.gpus:
        raise ValueError(f"{resources.gpus_per_node()} GPUs per node asked, partition {name} has "
                         f"{part.gpus} per node")
    if resources.nodes_per_run > part.nodes:
        raise ValueError(f"{resources.nodes_per_run} nodes per run asked, partition {name} has {part.nodes}")
    cpus = resources.ranks_per_node() * resources.cpus_per_rank
    if cpus > part.cpus:
        raise ValueError(f"{cpus} CPUs per node asked ({resources.ranks_per_node()} ranks x "
                         f"{resources.cpus_per_rank}), partition {name} has {part.cpus}")
    if part.minutes is not None and time_minutes(resources.time) > part.minutes:
        raise ValueError(f"time limit {resources.time} exceeds partition {name}'s {part.minutes} minutes")
    return replace(resources, partition=name)


def slurm_states(ids: list[str]) -> dict[str, tuple[str, str]]:
    """(state, reason) of each job id the controller still knows; others are "unknown"."""
    known = {}
    for line in _slurm("squeue", "--noheader", "--array", "--states=all", "--format=%i|%T|%r").splitlines():
        job_id, state, reason = (line.strip().split("|") + ["", ""])[:3]
        known[job_id] = (_SLURM_STATES.get(state.split()[0] if state else "", "unknown"),
                         "" if reason in ("None", "(null)") else reason)
    return {job_id: known.get(job_id, ("unknown", "")) for job_id in ids}


class SlurmExecutor:
    """A grid as one SLURM job array through submitit; logs and pickles in `folder`."""

    name = "slurm"
    poll_s = SLURM_POLL_S

    def __init__(self, folder: Path, resources: Resources, job_name: str = "ffn-explorer"):
        self.folder, self.resources, self.job_name = Path(folder), resources, job_name

    def _submitit(self):
        import submitit  # only when a grid is submitted

        res = self.resources
        executor = submitit.SlurmExecutor(folder=self.folder, python=sys.executable)
        repo = Path(__file__).resolve().parents[2]
        params = dict(job_name=self.job_name, time=time_minutes(res.time), nodes=res.nodes_per_run,
                      ntasks_per_node=1, cpus_per_task=res.ranks_per_node() * res.cpus_per_rank,
                      array_parallelism=res.array_parallelism, signal_delay_s=SIGNAL_DELAY_S,
                      stderr_to_stdout=True,
                      setup=[f"export PYTHONPATH={repo}${{PYTHONPATH:+:$PYTHONPATH}}",
                             f"export SUBMITIT_PREEMPT_SIGNAL={PREEMPT_SIGNAL}"],
                      additional_parameters={"signal": f"{PREEMPT_SIGNAL}@{SIGNAL_DELAY_S}", "requeue": True})
        if res.partition:
            params["partition"] = res.partition
        if res.gpus_per_run:
            params["gpus_per_node"] = res.gpus_per_node()
        executor.update_parameters(**params)
        return executor

    def submit(self, launches: list[Launch]) -> list[str]:
        if not launches:
            return []
        self.folder.mkdir(parents=True, exist_ok=True)
        executor = self._submitit()
        try:
            with executor.batch():
                jobs = [executor.submit(TrainTask(launch, self.resources)) for launch in launches]
        except Exception as error:  # submitit raises its own types for sbatch's refusals
            raise ValueError(f"sbatch refused the grid: {error}") from None
        return [job.job_id for job in jobs]

    def state(self, ids: list[str]) -> dict[str, str]:
        return {job_id: state for job_id, (state, _) in slurm_states(ids).items()}

    def cancel(self, job_id: str) -> None:
        scancel(job_id)


def scancel(job_id: str) -> None:
    """SIGTERM to a running run (the trainer records "cancelled"), or drop a pending one."""
    _slurm("scancel", job_id)


# A run the scheduler has forgotten (finished long ago, or no answer) counts as alive while the
# trainer's status.json heartbeat is fresher than this; over NFS a file lock proves nothing.
HEARTBEAT_S = 600.0


def merge_state(status: dict, scheduler: str, reason: str = "", now: float | None = None) -> str:
    """What a cluster run is: the scheduler's word merged with the run's status.json.

    The scheduler decides pending / running; the trainer's own record decides how a run ended;
    a run that ended without one takes the scheduler's ending, or "failed (lost ...)"."""
    state = status.get("state", "queued")
    if state in FINAL_STATES:
        return state  # also while the scheduler still shows the job completing
    if scheduler == "pending":
        return "preempted (requeued, pending)" if state == "preempted" else describe("pending", reason)
    if scheduler == "running":
        return "running"
    if scheduler in ("cancelled", "preempted"):
        return scheduler
    if scheduler in ("completed", "failed"):
        return "failed (the job ended without a final status; see train.log)"
    age = (now or time.time()) - float(status.get("updated") or 0.0)
    if state == "running" and age < HEARTBEAT_S:
        return "running"
    if state == "preempted":
        return state
    return f"failed (lost: the scheduler does not know the job and no heartbeat for {age:.0f} s)"


def is_final(state: str) -> bool:
    """Whether a (merged) state is an end: completed, failed ..., cancelled or preempted and not
    requeued."""
    return state.split()[0] in (*FINAL_STATES, "preempted") and "requeued" not in state


def submit_runs(executor: Executor, launches: list[Launch]) -> list[str]:
    """Submit; on a cluster each run first records what was submitted, then its job id (kept by
    the trainer's later writes), so a restarted app or sweep finds the jobs again and launches
    nothing twice. If the submission fails the runs say why ("failed")."""
    if executor.name == "local":
        for launch in launches:
            if launch.run.read_status().get("executor") not in (None, "local"):
                launch.run.record_job("local", None)  # no earlier cluster job speaks for it now
        return executor.submit(launches)
    for launch in launches:
        launch.run.write_status("queued", executor=executor.name, job_id=None, flags=list(launch.flags),
                                trackers=list(launch.trackers), error=None, pid=None)
    try:
        ids = executor.submit(launches)
    except ValueError as error:
        for launch in launches:
            launch.run.write_status("failed", error=f"not submitted: {error}")
        raise
    for launch, job_id in zip(launches, ids, strict=True):
        launch.run.record_job(executor.name, job_id)
    return ids


def describe(state: str, reason: str = "") -> str:
    """A scheduler state for people: "pending (Resources)"."""
    return f"{state} ({reason})" if reason else state


__all__ = ["STATES", "FINAL_STATES", "EXECUTORS", "TIME_FORMATS", "Resources", "Launch", "Partition",
           "LocalExecutor", "SlurmExecutor", "TrainTask", "time_minutes", "task_command", "slurm_available",
           "partitions", "check_slurm", "slurm_states",
           "describe", "scancel", "submit_runs", "merge_state", "is_final", "Executor", "HEARTBEAT_S",
           "SLURM_POLL_S"]
