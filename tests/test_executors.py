"""core.executors: time limits, resources, merged states, torchrun commands (no cluster), then
the slurm executor on a real one-node SLURM cluster (tests/slurm_cluster.py; skipped without root
or the Debian packages): a grid equals the same grid run locally, bad resources are refused
before anything is submitted, a preempted run is requeued and ends as an uninterrupted one, and
a 2-rank run equals torchrun's."""

import json
import os
import subprocess
import sys
import time

import pytest

from core.jobs import executors
from core.jobs.executors import Launch, Resources, merge_state, task_command, time_minutes
from core.runs import Run
from tests.conftest import REPO, run_cli


@pytest.mark.parametrize("text, minutes", [("90", 90), ("1:30", 2), ("2:00:00", 120), ("0:0:59", 1),
                                           ("1-0", 1440), ("1-2:30", 1590), ("2-00:00:01", 2881)])
def test_time_minutes_reads_slurm_formats(text, minutes):
    assert time_minutes(text) == minutes


@pytest.mark.parametrize("text", ["", "2h", "1:2:3:4", "-5", "0", "0:00:00", "1-"])
def test_time_minutes_refuses_others_naming_the_formats(text):
    with pytest.raises(ValueError, match="time limit .*(not a SLURM time .*HH:MM:SS|longer than zero)"):
        time_minutes(text)


@pytest.mark.parametrize("fields, message", [
    (dict(gpus_per_run=-1), "gpus-per-run must be >= 0"),
    (dict(nodes_per_run=0), "nodes-per-run must be >= 1"),
    (dict(cpus_per_rank=0), "cpus-per-rank must be >= 1"),
    (dict(gpus_per_run=3, nodes_per_run=2), "spread evenly over 2 nodes"),
    (dict(gpus_per_run=4, ranks_per_run=2), "one rank per GPU"),
    (dict(partition="a b"), "not a SLURM partition name"),
    (dict(time="soon"), "not a SLURM time"),
])
def test_resources_refuse_inconsistent_fields(fields, message):
    with pytest.raises(ValueError, match=message):
        Resources(**fields).check()


def test_resources_ranks_default_to_one_per_gpu():
    assert Resources().ranks() == 1
    assert Resources(gpus_per_run=8, nodes_per_run=2).check().ranks_per_node() == 4
    assert Resources(ranks_per_run=2).check().ranks_per_node() == 2


def test_task_command_single_standalone_and_multi_node(tmp_path):
    launch = Launch(Run(tmp_path / "r"), ("--preset", "micro"), ("tensorboard",))
    one = task_command(launch, Resources(), 2, resume=True)
    assert one[:3] == [sys.executable, "-m", "core.train"] and one[-1] == "--resume"
    assert "--log-to" in one and "tensorboard" in one
    two = task_command(launch, Resources(ranks_per_run=2), 2, resume=False)
    assert two[:6] == [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--standalone"]
    assert two[6:] == one[1:-1]  # torchrun runs the same module and flags
    many = task_command(launch, Resources(gpus_per_run=8, nodes_per_run=2), 1, False, "node0:29400", "17")
    assert many[3:13] == ["--nproc-per-node", "4", "--nnodes", "2", "--rdzv-backend", "c10d",
                          "--rdzv-endpoint", "node0:29400", "--rdzv-id", "17"]


NOW = 1_000_000.0


@pytest.mark.parametrize("status, scheduler, reason, merged", [
    ({"state": "queued"}, "pending", "Resources", "pending (Resources)"),
    ({"state": "preempted"}, "pending", "BeginTime", "preempted (requeued, pending)"),
    ({"state": "queued"}, "running", "", "running"),  # the trainer has not written yet
    ({"state": "completed"}, "running", "", "completed"),  # the job is completing
    ({"state": "running"}, "cancelled", "", "cancelled"),  # killed before the trainer could say so
    ({"state": "running", "updated": NOW - 5}, "unknown", "", "running"),  # scheduler forgot; heartbeat
    ({"state": "cancelled"}, "unknown", "", "cancelled"),
    ({"state": "preempted"}, "unknown", "", "preempted"),
])
def test_merge_state_scheduler_then_status(status, scheduler, reason, merged):
    assert merge_state(status, scheduler, reason, now=NOW) == merged


def test_merge_state_a_silent_run_is_lost_and_final():
    lost = merge_state({"state": "running", "updated": NOW - 3600}, "unknown", now=NOW)
    assert lost.startswith("failed (lost") and "3600 s" in lost and executors.is_final(lost)
    ended = merge_state({"state": "running"}, "completed", now=NOW)
    assert ended.startswith("failed") and executors.is_final(ended)
    assert not executors.is_final("preempted (requeued, pending)") and executors.is_final("preempted")


@pytest.mark.parametrize("flags, message", [
    (["--partition", "gpu"], "need --executor slurm"),
    (["--nodes-per-run", "2"], "need --executor slurm"),
    (["--gpus-per-run", "64"], "64 GPUs per run asked; this machine has"),
])
def test_local_executor_refuses_cluster_flags(tmp_path, flags, message):
    result = run_cli("core.sweep", "--experiment", "x", "--ffn", "swiglu", *flags,
                     "--runs-dir", str(tmp_path))
    assert result.returncode == 2 and message in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_slurm_executor_without_sbatch_says_so_and_writes_nothing(tmp_path):
    env = {**os.environ, "PATH": str(tmp_path / "nothing")}
    result = run_cli("core.sweep", "--experiment", "x", "--ffn", "swiglu", "--executor", "slurm",
                     "--runs-dir", str(tmp_path / "runs"), env=env)
    assert result.returncode == 2 and "needs SLURM's sbatch on PATH" in result.stderr
    assert not (tmp_path / "runs").exists()


# -- a real cluster --------------------------------------------------------------------------------
def _queue() -> str:
    return subprocess.run(["squeue", "-h", "-t", "all", "-o", "%i %T"], capture_output=True, text=True).stdout


def _job_ids() -> set[str]:
    return {line.split()[0] for line in _queue().splitlines()}


def _metrics(run: Run) -> list[dict]:
    return [json.loads(line) for line in run.file("metrics.jsonl").read_text().splitlines()]


WALL_CLOCK = ("elapsed_s",)


def _same_metrics(a: Run, b: Run, tol: float) -> None:
    left, right = _metrics(a), _metrics(b)
    assert [sorted(x) for x in left] == [sorted(y) for y in right]
    for x, y in zip(left, right, strict=True):
        for key, value in x.items():
            measured = key in WALL_CLOCK or key.startswith(("throughput/", "mem/"))
            if isinstance(value, float) and not measured:
                assert y[key] == pytest.approx(value, abs=tol), key


GRID = ["--preset", "micro", "--ffn", "swiglu", "dual", "--seeds", "0", "1", "--steps", "20", "--no-progress"]


def _unmeasured_cells(stdout: str) -> list[list[str]]:
    """The Table 1 rows a sweep printed, without the measured cells (peak memory, tok/s) and the
    parameter count: the fixed-width columns from "peak mem GB" up to "health"."""
    lines = stdout.splitlines()
    header = next(line for line in lines if line.startswith("variant"))
    start, end = header.index("peak mem GB"), header.index("health")
    rows = [line for line in lines if line.startswith(("swiglu", "dual"))]
    return [row[:start].split() + row[end:].split() for row in rows]


def test_a_slurm_grid_equals_the_local_grid(slurm_cluster, tmp_path):
    local = run_cli("core.sweep", "--experiment", "g", "--runs-dir", str(tmp_path / "local"), *GRID,
                    "--parallel", str(os.cpu_count()))  # one thread per run, as on the cluster
    assert local.returncode == 0, local.stderr[-2000:]
    slurm = run_cli("core.sweep", "--experiment", "g", "--runs-dir", str(tmp_path / "slurm"), *GRID,
                    "--executor", "slurm", "--cpus-per-rank", "1", "--parallel", "2")
    assert slurm.returncode == 0, slurm.stderr[-2000:]
    assert _unmeasured_cells(slurm.stdout) == _unmeasured_cells(local.stdout)
    for name in ("swiglu-s0", "swiglu-s1", "dual-s0", "dual-s1"):
        run = Run(tmp_path / "slurm" / "g" / name)
        status = run.read_status()
        assert status["state"] == "completed" and status["executor"] == "slurm" and "_" in status["job_id"]
        _same_metrics(Run(tmp_path / "local" / "g" / name), run, 1e-6)


@pytest.mark.parametrize("flags, message", [
    (["--partition", "gpu"], "unknown partition 'gpu'; the cluster has debug"),
    (["--gpus-per-run", "1"], "1 GPUs per node asked, partition debug has 0"),
    (["--nodes-per-run", "2", "--ranks-per-run", "2"], "2 nodes per run asked, partition debug has 1"),
    (["--ranks-per-run", "64", "--cpus-per-rank", "4"], "256 CPUs per node asked"),
    (["--time", "1h"], "not a SLURM time"),
])
def test_bad_cluster_resources_are_refused_before_submitting(slurm_cluster, tmp_path, flags, message):
    before = _job_ids()
    result = run_cli("core.sweep", "--experiment", "x", "--runs-dir", str(tmp_path), *GRID,
                     "--executor", "slurm", *flags)
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1
    assert _job_ids() == before and list(tmp_path.iterdir()) == []


def _wait(predicate, timeout: float, what: str):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}; queue: {_queue()}")


@pytest.mark.parametrize("ranks", [1, 2])
def test_a_preempted_run_is_requeued_and_ends_as_an_uninterrupted_one(slurm_cluster, tmp_path, ranks):
    """SIGUSR1 reaches every process of the job (submitit's, torchrun's agent, each rank): the
    ranks checkpoint, the job is requeued and resumes; the metrics are an uninterrupted run's."""
    flags = ["--preset", "micro", "--ffn", "dual", "--seeds", "0", "--steps", "24", "--no-progress",
             "--set", "checkpoint_every=1000", "--set", "log_every=4", "--set", "eval_every=12",
             "--executor", "slurm", "--cpus-per-rank", "1", "--ranks-per-run", str(ranks)]
    whole = run_cli("core.sweep", "--experiment", "g", "--runs-dir", str(tmp_path / "whole"), *flags)
    assert whole.returncode == 0, whole.stderr[-2000:]
    sweep = subprocess.Popen([sys.executable, "-m", "core.sweep", "--experiment", "g", "--runs-dir",
                              str(tmp_path / "cut"), *flags], cwd=REPO, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    run = Run(tmp_path / "cut" / "g" / "dual-s0")
    status = _wait(lambda: (s := run.read_status()).get("state") == "running" and (s.get("step") or 0) >= 8
                   and s, 120, "the run to train 8 steps")
    subprocess.run(["scancel", "--signal=USR1", status["job_id"]], check=True)  # what SLURM sends first
    _wait(lambda: run.read_status().get("state") == "preempted", 60, "the trainer to checkpoint")
    out, err = sweep.communicate(timeout=240)
    assert sweep.returncode == 0, err[-2000:]
    log = run.file("train.log").read_text()
    starts = [line for line in log.splitlines() if line.startswith("--- ")]
    assert "preempted at step" in log and len(starts) == 2  # the job, then the requeued job resuming
    assert not starts[0].endswith("--resume") and starts[1].endswith("--resume")
    assert run.read_status()["state"] == "completed"
    _same_metrics(Run(tmp_path / "whole" / "g" / "dual-s0"), run, 1e-6)


def test_a_two_rank_run_under_slurm_equals_torchrun(slurm_cluster, tmp_path):
    shape = ["--preset", "micro", "--ffn", "dual", "--steps", "6", "--no-progress", "--set", "log_every=1",
             "--set", "eval_every=3", "--set", "checkpoint_every=3"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          "-m", "core.train", "--run-dir", str(tmp_path / "torchrun" / "g" / "dual-s1"),
                          "--threads", "1", "--seed", "1", *shape], cwd=REPO, capture_output=True,
                         text=True, timeout=300, env=env)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    slurm = run_cli("core.sweep", "--experiment", "g", "--runs-dir", str(tmp_path / "slurm"), "--seeds", "1",
                    *shape, "--executor", "slurm", "--ranks-per-run", "2", "--cpus-per-rank", "1")
    assert slurm.returncode == 0, slurm.stderr[-2000:]
    run = Run(tmp_path / "slurm" / "g" / "dual-s1")
    assert run.read_config()["world_size"] == 2
    _same_metrics(Run(tmp_path / "torchrun" / "g" / "dual-s1"), run, 1e-4)


def test_a_sweep_run_again_follows_its_jobs_and_submits_none_twice(slurm_cluster, tmp_path):
    flags = ["--experiment", "g", "--runs-dir", str(tmp_path), "--preset", "micro", "--ffn", "swiglu", "dual",
             "--steps", "20", "--no-progress", "--executor", "slurm", "--cpus-per-rank", "2"]  # one at a time
    first = subprocess.Popen([sys.executable, "-m", "core.sweep", *flags], cwd=REPO,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    runs = [Run(tmp_path / "g" / name) for name in ("swiglu-s0", "dual-s0")]
    jobs = _wait(lambda: all(r.read_status().get("job_id") for r in runs) and
                 [r.read_status()["job_id"] for r in runs], 60, "the jobs")
    first.kill()  # the sweep dies; its jobs stay on the cluster
    first.wait()
    again = run_cli("core.sweep", *flags)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "2 runs already queued or running on slurm: following them" in again.stdout
    assert [r.read_status()["job_id"] for r in runs] == jobs
    assert all(r.read_status()["state"] == "completed" for r in runs)
    assert [r.file("train.log").read_text().count("slurm job") for r in runs] == [1, 1]
