"""Job control: queueing, the concurrency limit, cancel, restart recovery, concurrent submits."""

import os
import sys
import threading
import time

import pytest

from core.config import preset
from core.jobs import launch, local
from core.jobs.manager import ORPHANED, JobManager, eta_seconds
from core.runs import Run
from core.training.trainer import run_record

FAST = ["eval_every=6", "checkpoint_every=6", "log_every=3"]
LONG = 3000  # steps of a run that is cancelled long before it could finish


def rows(manager: JobManager, experiment: str) -> dict[str, dict]:
    return {row["run"]: row for row in manager.status(experiment)}


def wait_for(predicate, manager: JobManager | None = None, timeout: float = 90.0):
    """Poll `predicate` (ticking `manager` by hand when given) until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if manager is not None:
            manager.tick()
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {predicate}")


def in_training(manager: JobManager, experiment: str, run: str) -> bool:
    """Past the first logged step: inside the loop, where a cancel is the trainer's own
    "interrupted" (earlier, the runner records "cancelled" for it)."""
    row = rows(manager, experiment)[run]
    return row["state"] == "running" and row["step"] >= 3


def launches(run: Run) -> int:
    log = run.file("train.log")
    return log.read_text().count("launching:") if log.exists() else 0


def test_submit_validates_before_writing_anything(tmp_path):
    root = tmp_path / "runs"
    manager = JobManager(root, max_concurrent=1, start=False)
    bad = [dict(seeds=[]), dict(variants=[]), dict(overrides=["bogus=1"]), dict(experiment="../x"),
           dict(experiment="a/b"), dict(preset="huge"), dict(steps=0), dict(seeds=[-1]),
           dict(variants=["dual+nokey"])]
    for change in bad:
        args = dict(experiment="e", preset="micro", variants=["swiglu"], seeds=[0], steps=12,
                    overrides=FAST) | change
        with pytest.raises(ValueError):
            manager.submit(**args)
    assert not root.exists() or not any(root.rglob("*"))
    # A folder that holds another config is refused before any other cell is written.
    assert manager.submit("e", "micro", ["swiglu"], [0], steps=12, overrides=FAST) == ["swiglu-s0"]
    with pytest.raises(ValueError, match="different config"):
        manager.submit("e", "micro", ["dual", "swiglu"], [0], steps=13, overrides=FAST)
    assert not (root / "e" / "dual-s0").exists()
    assert rows(manager, "e")["swiglu-s0"]["state"] == "queued"


def test_queue_respects_the_limit_and_resubmit_skips_completed(tmp_path):
    manager = JobManager(tmp_path, max_concurrent=1, poll_s=0.1)
    try:
        names = manager.submit("q", "micro", ["swiglu", "dual"], [0], steps=12, overrides=FAST)
        assert names == ["swiglu-s0", "dual-s0"]
        peak = 0
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            states = [row["state"] for row in manager.status("q")]
            peak = max(peak, states.count("running"), len(manager.active()))
            if states == ["completed", "completed"]:
                break
            time.sleep(0.05)
        assert peak == 1
        for row in manager.status("q"):
            assert row["state"] == "completed" and row["step"] == row["steps"] == 12
            assert row["progress"] == 1.0 and row["train_loss"] > 0 and row["val_loss"] > 0
        assert manager.submit("q", "micro", ["dual", "swiglu"], [0], steps=12, overrides=FAST) == []
    finally:
        manager.shutdown()


def test_cancel_queued_and_running(tmp_path):
    manager = JobManager(tmp_path, max_concurrent=1, start=False, kill_grace_s=60)
    try:
        manager.submit("c", "micro", ["swiglu", "dual"], [0], steps=LONG, overrides=FAST)
        manager.tick()
        assert manager.active() == {"c/swiglu-s0": "child"}
        assert manager.cancel("c", "dual-s0") == "cancelled"
        wait_for(lambda: in_training(manager, "c", "swiglu-s0"), manager)
        assert manager.cancel("c", "swiglu-s0") == "cancelled"
        wait_for(lambda: not manager.active(), manager)
        status = Run.at(tmp_path, "c", "swiglu-s0").read_status()
        assert (status["state"], status["error"]) == ("cancelled", "interrupted")  # train's words
        manager.tick()
        dual = Run.at(tmp_path, "c", "dual-s0")
        assert dual.read_status()["state"] == "cancelled" and launches(dual) == 0
        with pytest.raises(ValueError, match="only queued or running"):
            manager.cancel("c", "dual-s0")
        with pytest.raises(ValueError, match="no run"):
            manager.cancel("c", "missing-s0")
    finally:
        manager.shutdown(cancel_running=True, timeout=10)


def test_restart_finds_running_and_queued_runs_and_orphans(tmp_path):
    first = JobManager(tmp_path, max_concurrent=1, start=False)
    first.submit("r", "micro", ["swiglu"], [0], steps=LONG, overrides=FAST)
    first.tick()
    first.submit("r", "micro", ["dual"], [0], steps=12, overrides=FAST)
    wait_for(lambda: in_training(first, "r", "swiglu-s0"))
    first.shutdown()  # the app goes away; its child keeps training
    orphan = Run.at(tmp_path, "o", "swiglu-s0")
    orphan.write_config(run_record(preset("micro"), "cpu"))
    orphan.write_status("running", pid=2**22 + 1, step=3)  # no process holds its lock
    second = JobManager(tmp_path, max_concurrent=1, start=False)
    try:
        assert orphan.read_status()["state"] == "failed" and orphan.read_status()["error"] == ORPHANED
        second.tick()
        assert second.active() == {"r/swiglu-s0": "external"}  # it holds the only slot
        assert rows(second, "r")["dual-s0"]["state"] == "queued"
        assert second.cancel("r", "swiglu-s0") == "cancelled"  # SIGINT through status.json's pid
        wait_for(lambda: second.active() == {"r/dual-s0": "child"}, second)  # the slot came free
        swiglu = Run.at(tmp_path, "r", "swiglu-s0")
        assert swiglu.read_status()["state"] == "cancelled" and launches(swiglu) == 1
        assert launches(Run.at(tmp_path, "r", "dual-s0")) == 1
    finally:
        second.shutdown(cancel_running=True, timeout=10)


def test_a_run_locked_by_another_process_keeps_its_status(tmp_path):
    manager = JobManager(tmp_path, max_concurrent=1, start=False)
    manager.submit("l", "micro", ["swiglu"], [0], steps=12, overrides=FAST)
    run = Run.at(tmp_path, "l", "swiglu-s0")
    manager.tick()  # the child needs seconds to reach the lock; the test takes it first
    with run.lock():
        wait_for(lambda: "being trained by another process" in run.file("train.log").read_text())
        wait_for(lambda: manager.active() == {"l/swiglu-s0": "external"}, manager)
        assert run.read_status()["state"] == "queued" and run.read_status().get("error") is None
    manager.tick()
    assert manager.active() == {}
    manager.shutdown()


def test_concurrent_submits_queue_each_run_once(tmp_path):
    manager = JobManager(tmp_path, max_concurrent=1, start=False)
    barrier, results = threading.Barrier(6), []

    def submit():
        barrier.wait()
        results.append(manager.submit("t", "micro", ["swiglu", "dual"], [0, 1], steps=12,
                                      overrides=FAST))

    threads = [threading.Thread(target=submit) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    queued = sorted(name for names in results for name in names)
    assert queued == ["dual-s0", "dual-s1", "swiglu-s0", "swiglu-s1"]
    assert [row["state"] for row in manager.status("t")] == ["queued"] * 4
    # A second manager on the same root takes over the queue in submit order, once.
    assert JobManager(tmp_path, start=False).queue() == \
        ["t/swiglu-s0", "t/swiglu-s1", "t/dual-s0", "t/dual-s1"]
    manager.shutdown()


def fake_trainer(monkeypatch, code: str) -> None:
    """Make the runner start `python -c code` instead of core.train (for lifecycle tests)."""
    monkeypatch.setattr(launch, "train_command", lambda run, flags, threads, resume, trackers=():
                        [sys.executable, "-c", code])


def test_a_child_that_dies_without_a_status_is_failed_with_its_last_words(tmp_path, monkeypatch):
    fake_trainer(monkeypatch, "import sys; print('boom: no data'); sys.exit(3)")
    manager = JobManager(tmp_path, max_concurrent=1, start=False)
    manager.submit("d", "micro", ["swiglu"], [0], steps=12)
    manager.tick()
    wait_for(lambda: not manager.active(), manager, timeout=30)
    status = Run.at(tmp_path, "d", "swiglu-s0").read_status()
    assert status["state"] == "failed"
    assert status["error"] == "the training process exited with code 3 without a final status: boom: no data"


def test_cancel_escalates_to_sigkill_after_the_grace_period(tmp_path, monkeypatch):
    fake_trainer(monkeypatch, "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                              "print('SIGTERM', 'ignored', flush=True); time.sleep(60)")
    manager = JobManager(tmp_path, max_concurrent=1, start=False, kill_grace_s=0.3)
    manager.submit("k", "micro", ["swiglu"], [0], steps=12)
    run = Run.at(tmp_path, "k", "swiglu-s0")
    manager.tick()
    wait_for(lambda: "SIGTERM ignored" in run.file("train.log").read_text(), timeout=30)
    assert manager.cancel("k", "swiglu-s0") == "cancelled"
    wait_for(lambda: not manager.active(), manager, timeout=30)
    status = run.read_status()
    assert status["state"] == "cancelled" and "killed" in status["error"]


def test_each_gpu_job_gets_its_own_device(tmp_path, monkeypatch):
    monkeypatch.setattr(local, "gpu_ids", lambda: ["3", "5"])
    started = []

    class FakePopen:
        pid = 2**30  # beyond pid_max: nothing to hit even if it were signalled

        def __init__(self, command, env, **kwargs):
            started.append(env["CUDA_VISIBLE_DEVICES"])

        def poll(self):
            return None

    monkeypatch.setattr(local.subprocess, "Popen", FakePopen)
    manager = JobManager(tmp_path, start=False)
    assert manager.max_concurrent == 2 and manager.threads == max(1, (os.cpu_count() or 1) // 2)
    manager.submit("g", "micro", ["swiglu", "dual"], [0, 1], steps=12)
    manager.tick()
    assert started == ["3", "5"] and len(manager.queue()) == 2
    assert [Run.at(tmp_path, "g", n).read_status()["devices"] for n in ("swiglu-s0", "swiglu-s1")] == \
        [["3"], ["5"]]
    manager.shutdown()


@pytest.mark.parametrize("status, state, step, steps, expected", [
    ({"started": 100.0, "start_step": 0}, "running", 10, 40, 30 * 2.0),  # 20 s for 10 steps
    ({"started": 100.0, "start_step": 20}, "running", 30, 40, 10 * 2.0),  # resumed at 20
    ({"started": 100.0}, "running", 0, 40, None),  # no step done yet
    ({"started": 100.0}, "completed", 40, 40, None),
    ({}, "queued", 0, 40, None),
])
def test_eta_follows_the_pace_since_the_last_start(status, state, step, steps, expected, monkeypatch):
    monkeypatch.setattr(time, "time", lambda: 120.0)
    assert eta_seconds(status, state, step, steps) == expected


def test_a_cluster_run_queued_again_here_is_a_local_run(tmp_path):
    """A run cancelled on SLURM and launched again locally forgets its old job: the row, cancel
    and a restart treat it as this machine's (scancel of a stale job id would hit another job)."""
    first = JobManager(tmp_path, max_concurrent=1, start=False)
    first.submit("c", "micro", ["swiglu"], [0], steps=LONG, overrides=FAST)  # writes the config
    first.shutdown()
    run = Run.at(tmp_path, "c", "swiglu-s0")
    run.write_status("cancelled", executor="slurm", job_id="41_0", error="cancelled")
    manager = JobManager(tmp_path, max_concurrent=1, start=False)
    try:
        assert manager.submit("c", "micro", ["swiglu"], [0], steps=LONG, overrides=FAST) == ["swiglu-s0"]
        status = run.read_status()
        assert (status["state"], status["executor"], status["job_id"]) == ("queued", "local", None)
        assert manager.status("c")[0]["job"] is None
        assert manager.cancel("c", "swiglu-s0") == "cancelled"  # the local queue's cancel, no scancel
        assert run.read_status()["error"] == "cancelled before it started"
    finally:
        manager.shutdown(cancel_running=True, timeout=10)
