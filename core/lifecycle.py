"""A run's lifecycle, declared once: the fields of status.json, its states and the transitions
between them, when a run resumes, and when a run folder may take a config.

Everything that writes a status (the trainer, the job runner, the app's job manager, the SLURM
backend) goes through :meth:`core.runs.Run.write_status`, which checks the fields and the transition
here. Torch-free: orchestration imports it.
"""

from typing import Any, TypedDict

from core.config import RunConfig

# Bumped when a field changes meaning; a status.json without one was written before schemas (0)
# and reads the same way (every field is optional).
SCHEMA = 1

STATES = ("queued", "running", "completed", "failed", "cancelled", "preempted")
LIVE_STATES = ("queued", "running")  # a process is (or will be) working on the run
FINAL_STATES = ("completed", "failed", "cancelled")  # nothing will happen unless someone relaunches

# From each state, the states a status write may go to. A run without a status may take any state
# (the first write; fixtures and imports write a finished record directly).
TRANSITIONS: dict[str, tuple[str, ...]] = {
    "queued": ("queued", "running", "failed", "cancelled", "preempted"),
    # -> queued: an orphan (its trainer died, its lock is free) is launched again.
    "running": ("running", "completed", "failed", "cancelled", "preempted", "queued"),
    "completed": ("completed",),  # a completed run is never trained again
    "failed": ("failed", "queued", "running"),  # relaunched (queue) or resumed by hand (core.train)
    "cancelled": ("cancelled", "queued", "running"),
    # -> queued/running: requeued by the scheduler or relaunched; cancelled or failed while waiting.
    "preempted": ("preempted", "queued", "running", "cancelled", "failed"),
}


class Status(TypedDict, total=False):
    """The fields of status.json. Every write keeps the fields it does not set."""

    schema: int  # SCHEMA of the writer (absent: written before schemas)
    state: str  # one of STATES
    updated: float  # time.time() of the last write: the heartbeat of a cluster run
    error: str | None  # why a run failed or was cancelled, in words; None while all is well
    step: int  # optimizer steps done when the status was written
    pid: int | None  # the training process (rank 0) on its machine; None before it starts
    started: float  # when the trainer last (re)started
    start_step: int  # the step it (re)started from (a resume: the checkpoint's)
    last_finite_loss: float | None  # a diverged run's last finite train loss
    queued_at: float  # when the app queued it (orders a restarted app's queue)
    flags: list[str]  # core.train flags it was queued with (a restarted app launches them)
    trackers: list[str]  # trackers its metrics are mirrored to (not part of its identity)
    ranks: int  # training processes of a local run (torchrun when more than one)
    devices: list[str] | None  # CUDA_VISIBLE_DEVICES entries a local run is pinned to
    executor: str  # "local" or "slurm": who runs it
    job_id: str | None  # the scheduler's job id (slurm), None locally
    health: list[dict]  # alarms at the last evaluation (core.health: kind, layer, value, detail)


FIELDS = frozenset(Status.__annotations__)


def check_fields(fields: dict[str, Any]) -> None:
    """ValueError for a field status.json does not declare (a typo would go unread forever)."""
    unknown = sorted(set(fields) - FIELDS)
    if unknown:
        raise ValueError(f"status.json has no field {', '.join(map(repr, unknown))}; declared: "
                         f"{', '.join(sorted(FIELDS))}")


def check_transition(old: str | None, new: str) -> None:
    """ValueError unless a run in state `old` (None: no status yet) may go to `new`."""
    if new not in STATES:
        raise ValueError(f"unknown run state {new!r}")
    if old is None or old not in TRANSITIONS:  # no status, or an unreadable one: any start
        return
    if new not in TRANSITIONS[old]:
        raise ValueError(f"a {old} run cannot become {new}" +
                         ("; it is finished (choose another run name)" if old == "completed" else ""))


def schema_of(status: dict) -> int:
    """The schema a status was written with (0: before schemas)."""
    return int(status.get("schema", 0))


def should_resume(has_checkpoint: bool) -> bool:
    """The resume rule: a run continues from its newest complete checkpoint whenever it has one
    (a fresh start would train the same steps twice). Launchers pass ``--resume`` by it and the
    trainer refuses to start over a checkpoint without it; a completed run is never launched."""
    return has_checkpoint


def check_config(stored: dict | None, config: RunConfig, where: str) -> None:
    """ValueError when the run folder `where` already holds a config other than `config`."""
    if stored is not None and RunConfig.from_dict(stored) != config:
        raise ValueError(f"run folder {where} holds a different config; pass the options it was made "
                         "with (--resume continues it), or choose another experiment or run name")
