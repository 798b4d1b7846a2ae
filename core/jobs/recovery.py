"""What a (re)starting job manager finds on disk: the runs queued here, the runs other processes
are training, the runs a cluster holds; orphans (a "running" run whose lock is free) are failed."""

from dataclasses import dataclass, field
from pathlib import Path

from core.jobs.launch import Launch
from core.runs import Run, list_experiments, list_runs

ORPHANED = "orphaned: the training process ended without a final status"


@dataclass
class Found:
    """Runs by who works on them."""

    queued: list[tuple[Launch, int]] = field(default_factory=list)  # (launch, ranks) in queue order
    external: list[Run] = field(default_factory=list)  # trained by another process here (lock held)
    remote: list[Run] = field(default_factory=list)  # queued or running on SLURM


def recover(root: Path) -> Found:
    """Sort every run under `root` by who works on it; fail orphans and unlaunchable queued runs."""
    found, queued = Found(), []
    for experiment in list_experiments(root):
        for run in list_runs(root, experiment):
            status = run.read_status()
            state = status.get("state")
            if status.get("executor") == "slurm":
                if state in ("queued", "running", "preempted"):
                    found.remote.append(run)  # the cluster runs it: follow, never relaunch
            elif state == "queued" and "flags" in status:
                launch, ranks = queued_launch(run, status), status.get("ranks") or 1
                if launch is not None:
                    queued.append((status.get("queued_at") or 0.0, run.name, launch, ranks))
            elif state == "running":
                _adopt_running(run, found)
    queued.sort(key=lambda item: (item[0], item[1]))
    found.queued = [(launch, ranks) for *_, launch, ranks in queued]
    return found


def queued_launch(run: Run, status: dict) -> Launch | None:
    """The launch a queued run's status describes; None (and the run failed) when it is unusable."""
    flags, trackers = status.get("flags"), status.get("trackers") or []
    if all(isinstance(v, list) and all(isinstance(f, str) for f in v) for v in (flags, trackers)):
        return Launch(run, tuple(flags), tuple(trackers))
    run.write_status("failed", error="queued without valid training flags")
    return None


def _adopt_running(run: Run, found: Found) -> None:
    if run.is_alive():
        found.external.append(run)  # another (older) process trains it: leave it alone
    else:
        run.write_status("failed", error=ORPHANED)
