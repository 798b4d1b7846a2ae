"""core.jobs.local, the one job runner on this machine: the sweep CLI and the app's queue pin GPUs
alike (a faked 2-GPU machine), start training processes in one place, and cancel alike (SIGTERM:
the trainer ends the run as cancelled and it resumes from its last checkpoint)."""

import re
import time

import pytest
from safetensors import safe_open

from core.jobs import local, sweep
from core.jobs.executors import LocalExecutor
from core.jobs.launch import Launch, Resources, grid
from core.jobs.manager import JobManager
from core.jobs.runner import execute, plan
from core.runs import Run
from tests.conftest import REPO

TWO_GPUS = ["0", "1"]


class FakePopen:
    """Records what a child would have been started with; ends once `FakePopen.ends` says so."""

    started: list[dict] = []
    ends = True
    pid = 2**30  # beyond pid_max: nothing to hit even if it were signalled
    returncode = None

    def __init__(self, command, env, **kwargs):
        FakePopen.started.append({"command": command, "devices": env.get("CUDA_VISIBLE_DEVICES"),
                                  "session": kwargs.get("start_new_session")})

    def poll(self):
        if FakePopen.ends:
            self.returncode = 0
        return self.returncode


@pytest.fixture
def two_gpus(monkeypatch):
    """A machine with two GPUs whose children only record how they were started."""
    monkeypatch.setattr(local, "gpu_ids", lambda: list(TWO_GPUS))
    monkeypatch.setattr(local.subprocess, "Popen", FakePopen)
    monkeypatch.setattr(FakePopen, "started", [])
    monkeypatch.setattr(FakePopen, "ends", True)
    return FakePopen.started


def test_the_sweep_gives_its_parallel_runs_different_gpus(tmp_path, two_gpus):
    sweep.main(["--experiment", "s", "--ffn", "swiglu", "dual", "--runs-dir", str(tmp_path), "--no-progress",
                "--parallel", "2", "--steps", "5"])
    assert sorted(child["devices"] for child in two_gpus) == ["0", "1"]
    assert all(child["session"] for child in two_gpus)


def test_the_app_queue_gives_its_runs_different_gpus_and_waits_for_busy_ones(tmp_path, two_gpus):
    FakePopen.ends = False
    manager = JobManager(tmp_path, max_concurrent=3, start=False)  # more slots than GPUs
    try:
        manager.submit("a", "micro", ["swiglu"], [0, 1, 2], steps=5)
        manager.tick()
        assert [child["devices"] for child in two_gpus] == ["0", "1"]
        assert manager.queue() == ["a/swiglu-s2"]  # waits while both GPUs are busy
        assert Run.at(tmp_path, "a", "swiglu-s1").read_status()["devices"] == ["1"]
        FakePopen.ends = True
        manager.tick()  # both end, the third starts on the first free GPU
        assert [child["devices"] for child in two_gpus] == ["0", "1", "0"]
    finally:
        manager.shutdown()


def test_a_two_rank_run_gets_two_adjacent_gpus_and_torchrun(tmp_path, two_gpus):
    FakePopen.ends = False
    cells = grid("micro", ["swiglu"], [0, 1], [], 5)
    executor = LocalExecutor(parallel=2, resources=Resources(gpus_per_run=2))
    ids = executor.submit([Launch(run, tuple(cell.flags)) for cell, run in plan(cells, tmp_path, "t")])
    assert executor.state(ids) == {ids[0]: "running", ids[1]: "pending"}  # no GPUs left for the second
    assert two_gpus[0]["devices"] == "0,1"
    command = two_gpus[0]["command"]
    assert command[1:6] == ["-m", "torch.distributed.run", "--nproc-per-node", "2", "--standalone"]
    FakePopen.ends = True
    assert executor.state(ids)[ids[1]] == "running" and two_gpus[1]["devices"] == "0,1"
    # The app's queue pins a 2-rank run the same way.
    FakePopen.ends = False
    manager = JobManager(tmp_path, max_concurrent=2, start=False)
    try:
        manager.submit("m", "micro", ["dual"], [0], steps=5, resources=Resources(ranks_per_run=2))
        manager.tick()
        assert two_gpus[-1]["devices"] == "0,1" and "torch.distributed.run" in two_gpus[-1]["command"]
    finally:
        manager.shutdown()


def test_one_place_starts_training_processes():
    found = [f"{path.relative_to(REPO)}:{n}" for path in sorted((REPO / "core").rglob("*.py"))
             for n, line in enumerate(path.read_text().splitlines(), 1) if re.search(r"\bPopen\(", line)]
    assert found == [f"core/jobs/local.py:{n}" for n in _lines(REPO / "core/jobs/local.py", r"\bPopen\(")]
    assert len(found) == 1
    runs = [f"{path.relative_to(REPO)}" for path in sorted((REPO / "core").rglob("*.py"))
            if re.search(r"subprocess\.(run|call|check_output|check_call)\(", path.read_text())]
    # squeue/sinfo; run_to_end; macOS's sysctl (whether the CPU has native bf16)
    assert runs == ["core/jobs/executors.py", "core/jobs/local.py", "core/training/precision.py"]
    spawners = [path for path in (REPO / "core").rglob("*.py") if re.search(r"\bspawn\(", path.read_text())]
    assert sorted(str(p.relative_to(REPO)) for p in spawners) == \
        ["core/jobs/executors.py", "core/jobs/local.py"]  # the SLURM task on a compute node, the runner


def _lines(path, pattern: str) -> list[int]:
    return [n for n, line in enumerate(path.read_text().splitlines(), 1) if re.search(pattern, line)]


# cancel, the same from the CLI and the app -----------------------------------------------------------
# A short micro run with a checkpoint every 5 steps, cheap on a shared CPU.
SHORT = ["batch_size=8", "seq_len=64", "eval_batches=1", "eval_every=5", "checkpoint_every=5", "log_every=1"]
STEPS = 24


def _wait(predicate, timeout: float = 120.0, tick=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if tick is not None:
            tick()
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {predicate}")


def _in_training(run: Run) -> bool:
    """Past a checkpoint and inside the loop (where the trainer's own handler records a cancel)."""
    status = run.read_status()
    return status.get("state") == "running" and (status.get("step") or 0) >= 7


def _checkpoint_step(run: Run) -> int:
    with safe_open(str(run.checkpoint_dir() / "model.safetensors"), "pt") as weights:
        return int(weights.metadata()["step"])


def _resumed_from(run: Run, checkpoint: int) -> None:
    """The run completed in a second launch that continued from `checkpoint`, training no step twice."""
    status = run.read_status()
    assert status["state"] == "completed" and status["start_step"] == checkpoint > 0
    starts = [line for line in run.file("train.log").read_text().splitlines() if "launching:" in line]
    assert len(starts) == 2 and not starts[0].endswith("--resume") and starts[1].endswith("--resume")
    steps = [record["step"] for record in run.read_metrics(0)[0]]
    assert steps == list(range(1, STEPS + 1))


@pytest.mark.slow
def test_cancel_from_the_cli_and_from_the_app_end_alike_and_resume(tmp_path):
    cells = grid("micro", ["swiglu"], [0], SHORT, STEPS)
    # The CLI path: the executor behind core.sweep and the studies.
    cli = Run.at(tmp_path, "cli", cells[0].name)
    executor = LocalExecutor(parallel=1)
    ids = executor.submit([Launch(run, tuple(cell.flags)) for cell, run in plan(cells, tmp_path, "cli")])
    _wait(lambda: _in_training(cli))
    executor.cancel(ids[0])
    _wait(lambda: executor.state(ids)[ids[0]] != "running", 60)
    cli_cancelled, cli_checkpoint = cli.read_status(), _checkpoint_step(cli)
    assert not cli.is_alive()
    assert execute(plan(cells, tmp_path, "cli"), LocalExecutor(parallel=1), progress=False) == {cli.name: 0}
    # The app's path: JobManager.cancel, then the same grid launched again.
    manager = JobManager(tmp_path, max_concurrent=1, start=False)
    app = Run.at(tmp_path, "app", cells[0].name)
    try:
        manager.submit("app", "micro", ["swiglu"], [0], steps=STEPS, overrides=SHORT)
        _wait(lambda: _in_training(app), tick=manager.tick)
        assert manager.cancel("app", app.name) == "cancelled"
        _wait(lambda: not manager.active(), 60, tick=manager.tick)
        app_cancelled, app_checkpoint = app.read_status(), _checkpoint_step(app)
        assert manager.submit("app", "micro", ["swiglu"], [0], steps=STEPS, overrides=SHORT) == [app.name]
        _wait(lambda: app.read_status()["state"] == "completed", tick=manager.tick)
    finally:
        manager.shutdown(cancel_running=True, timeout=10)
    # The same end: the trainer's own record of a SIGTERM, whoever sent it.
    assert (cli_cancelled["state"], cli_cancelled["error"]) == ("cancelled", "interrupted")
    assert (app_cancelled["state"], app_cancelled["error"]) == ("cancelled", "interrupted")
    _resumed_from(cli, cli_checkpoint)
    _resumed_from(app, app_checkpoint)
