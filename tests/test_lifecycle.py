"""core.lifecycle: the status record (fields, schema, transitions), the resume rule and the config
check, as every writer of runs/ sees them through core.runs.Run."""

import json
import shutil
from pathlib import Path

import pytest
import torch

from core import lifecycle
from core.config import apply_overrides, preset
from core.jobs.launch import run_record
from core.lifecycle import FIELDS, SCHEMA, STATES, TRANSITIONS, Status, check_transition, schema_of
from core.runs import Run
from tests.conftest import REPO


def fresh(tmp_path: Path, name: str = "r") -> Run:
    run = Run.at(tmp_path, "e", name)
    run.write_config(run_record(preset("micro"), "cpu"))
    return run


def test_the_record_declares_every_field_with_a_comment():
    source = Path(lifecycle.__file__).read_text()
    body = source[source.index("class Status"):source.index("FIELDS =")]
    for name in Status.__annotations__:
        line = next(line for line in body.splitlines() if line.strip().startswith(f"{name}:"))
        assert "  # " in line, f"field {name} has no comment"
    assert {"schema", "state", "updated", "error", "step", "pid", "flags", "devices", "job_id"} <= FIELDS


def test_writes_carry_the_schema_and_refuse_undeclared_fields(tmp_path):
    run = fresh(tmp_path)
    status = run.write_status("queued", flags=["--preset", "micro"], ranks=1)
    assert status["schema"] == SCHEMA == json.loads(run.file("status.json").read_text())["schema"]
    with pytest.raises(ValueError, match="no field 'gpus_used'"):
        run.write_status("running", gpus_used=[0])
    with pytest.raises(ValueError, match="unknown run state"):
        run.write_status("exploded")
    assert run.read_status()["state"] == "queued"  # a refused write changes nothing


@pytest.mark.parametrize("old, new", [("completed", "running"), ("completed", "queued"),
                                      ("completed", "failed"), ("queued", "completed"),
                                      ("failed", "completed"), ("cancelled", "preempted")])
def test_transitions_that_are_not_allowed_raise(tmp_path, old, new):
    run = fresh(tmp_path)
    run.write_status(old)
    with pytest.raises(ValueError, match=f"a {old} run cannot become {new}"):
        run.write_status(new)
    assert run.read_status()["state"] == old


@pytest.mark.parametrize("path", [
    ["queued", "running", "completed"],  # the plain life
    ["queued", "running", "preempted", "queued", "running", "completed"],  # requeued by SLURM
    ["running", "preempted", "running"],  # the requeued job starts at once
    ["queued", "running", "cancelled", "queued", "running", "completed"],  # cancelled, relaunched
    ["queued", "running", "failed", "running", "completed"],  # failed, resumed by hand
    ["running", "queued", "running"],  # an orphan launched again
    ["queued", "cancelled"], ["queued", "running", "running", "completed", "completed"],
])
def test_legitimate_lives_are_allowed(tmp_path, path):
    run = fresh(tmp_path)
    for state in path:
        run.write_status(state)
    assert run.read_status()["state"] == path[-1]


def test_every_state_has_its_transitions_and_a_new_run_may_start_anywhere():
    assert set(TRANSITIONS) == set(STATES)
    assert all(set(targets) <= set(STATES) and state in targets for state, targets in TRANSITIONS.items())
    for state in STATES:
        check_transition(None, state)


def test_old_status_files_without_a_schema_stay_readable(tmp_path):
    shipped = sorted(REPO.glob("runs/*/*/status.json"))
    assert shipped, "the repository ships runs"
    for path in shipped:
        status = Run(path.parent).read_status()
        assert status["state"] in STATES and schema_of(status) in (0, SCHEMA)
    # An old record (no schema, an older app's "gpu") is read as written and upgraded by a write.
    run = fresh(tmp_path)
    old = {"state": "running", "pid": 7, "step": 3, "gpu": 1, "updated": 1.0}
    run.file("status.json").write_text(json.dumps(old))
    assert run.read_status() == old and schema_of(old) == 0
    status = run.write_status("failed", error="orphaned")
    assert status["schema"] == SCHEMA and status["step"] == 3 and status["error"] == "orphaned"


def test_a_copied_shipped_run_takes_a_legal_write(tmp_path):
    source = next(p.parent for p in sorted(REPO.glob("runs/*/*/status.json"))
                  if json.loads(p.read_text()).get("state") == "completed")
    run = Run(shutil.copytree(source, tmp_path / "x" / source.name))
    assert run.write_status("completed", step=run.read_status()["step"])["schema"] == SCHEMA
    with pytest.raises(ValueError, match="completed run cannot become running"):
        run.write_status("running")


def test_the_resume_rule_is_having_a_checkpoint(tmp_path):
    run = fresh(tmp_path)
    assert not run.resumes()
    run.save_checkpoint({"w": torch.zeros(1)}, {"optimizer": {}}, step=5)
    assert run.resumes()
    run.write_status("cancelled")
    assert run.resumes()  # cancelled, failed or preempted alike: continue where it stopped


def test_the_config_check_is_one_clear_message(tmp_path):
    run = fresh(tmp_path)
    run.check_config(preset("micro"))  # the same config: fine
    Run.at(tmp_path, "e", "empty").check_config(preset("micro"))  # no config yet: fine
    with pytest.raises(ValueError, match=r"run folder e/r \(.*\) holds a different config; pass the "
                                         r"options it was made with"):
        run.check_config(apply_overrides(preset("micro"), ["lr=0.5"]))
