"""core.studies.driver: a study advanced phase by phase through a job queue, every run queued
exactly once, whatever the number of passes or drivers (an app restarted or killed between them)."""

from pathlib import Path

import pytest

from core.jobs.launch import run_record
from core.runs import Run
from core.studies.compose import from_text
from core.studies.driver import StudyDriver, advance
from core.studies.manifest import read_manifest
from core.studies.progress import progress

TEXT = """preset = "micro"
variants = ["swiglu", "dual"]
seeds = [0, 1]
steps = 4
lrs = [0.001, 0.003]

[select]
fraction = 1.0
"""
# seed 0's final val loss at each lr: swiglu is best at 0.003, dual at 0.001
LOSSES = {("swiglu", 0.001): 5.0, ("swiglu", 0.003): 4.0, ("dual", 0.001): 4.5, ("dual", 0.003): 4.9}


class FakeQueue:
    """Stands for the job manager: records every queued run and marks it queued on disk."""

    def __init__(self, root: Path):
        self.root, self.queued = root, []

    def __call__(self, experiment: str, cells: list, launch: dict | None = None) -> list[str]:
        for cell in cells:
            run = Run.at(self.root, experiment, cell.name)
            run.write_config(run_record(cell.config, "cpu", 1))
            run.write_status("queued")
            self.queued.append(f"{experiment}/{cell.name}")
        return [cell.name for cell in cells]

    def finish_all(self) -> None:
        """Every queued run completes, with the loss LOSSES gives its variant and lr (seed 1: +0.1)."""
        for name in self.queued:
            run = Run.at(self.root, *name.split("/"))
            if run.read_status()["state"] != "queued":
                continue
            config = run.read_config()
            lr, variant, seed = config["train"]["lr"], config["variant"], config["seed"]
            run.write_status("running")
            run.write_summary({"final_val_loss": LOSSES[(variant, lr)] + 0.1 * seed, "elapsed_s": 10.0})
            run.write_status("completed")


@pytest.fixture
def study(tmp_path):
    return from_text("mine", TEXT, tmp_path)


def test_phases_in_order_each_run_queued_once(study, tmp_path):
    queue = FakeQueue(tmp_path)
    assert not advance(study, tmp_path, queue)
    assert sorted(queue.queued) == ["mine-lr0.001/dual-s0", "mine-lr0.001/swiglu-s0",
                                    "mine-lr0.003/dual-s0", "mine-lr0.003/swiglu-s0"]
    assert not advance(study, tmp_path, queue) and len(queue.queued) == 4  # nothing twice
    queue.finish_all()
    assert not advance(study, tmp_path, queue)  # the sweep ended: seed 1 at each variant's best lr
    assert queue.queued[4:] == ["mine-lr0.003/swiglu-s1", "mine-lr0.001/dual-s1"]
    queue.finish_all()
    assert advance(study, tmp_path, queue) and len(queue.queued) == 6
    kinds = [(p["kind"], p["experiment"], p["runs"]) for p in read_manifest(tmp_path, "mine")["phases"]]
    assert kinds[-2:] == [("final", "mine-lr0.003", ["swiglu-s1"]), ("final", "mine-lr0.001", ["dual-s1"])]


def test_a_restarted_driver_picks_the_study_up_and_queues_nothing_twice(study, tmp_path):
    queue = FakeQueue(tmp_path)
    first = StudyDriver(tmp_path, queue, start=False)
    first.drive(study, executor="local")
    assert len(queue.queued) == 4 and progress(study, tmp_path)["state"] == "running"
    queue.finish_all()
    second = StudyDriver(tmp_path, queue, start=False)  # the app restarted: all it has is the disk
    second.tick()
    second.tick()
    assert len(queue.queued) == 6 == len(set(queue.queued))
    queue.finish_all()
    second.tick()
    done = progress(study, tmp_path)
    assert done["state"] == "completed" and done["completed"] == 6 and done["phase"] == "done"
    second.tick()
    assert len(queue.queued) == 6


def test_a_cancelled_study_queues_no_later_phase_and_a_failure_is_recorded(study, tmp_path):
    queue = FakeQueue(tmp_path)
    driver = StudyDriver(tmp_path, queue, start=False)
    driver.drive(study)
    driver.cancel(study)
    queue.finish_all()
    driver.tick()
    assert len(queue.queued) == 4 and progress(study, tmp_path)["state"] == "cancelled"

    def refuse(experiment, cells, launch):
        raise ValueError("run folder holds a different config")

    other = from_text("other", TEXT, tmp_path)
    StudyDriver(tmp_path, refuse, start=False).drive(other)
    shown = progress(other, tmp_path)
    assert shown["state"] == "failed" and "different config" in shown["error"]
    with pytest.raises(ValueError, match="unknown launch options"):
        driver.drive(study, gpus=2)


def test_progress_counts_and_eta(study, tmp_path):
    queue = FakeQueue(tmp_path)
    before = progress(study, tmp_path)
    assert (before["waiting"], before["runs"], before["eta_s"]) == (6, 6, None)
    assert before["phase"] == "sweep lr 0.001 (not started)"
    StudyDriver(tmp_path, queue, start=False).drive(study)
    queue.finish_all()
    now = progress(study, tmp_path)
    assert (now["completed"], now["waiting"], now["run_s"]) == (4, 2, 10.0)  # the finals: not yet queued
    assert now["eta_s"] == 20.0  # two runs left at 10 s each
