import json
import multiprocessing
import pickle

import pytest
import torch

from core.runs import (
    Run,
    RunLockedError,
    experiment_records,
    list_experiments,
    list_runs,
    runs_root,
    validate_name,
)


@pytest.mark.parametrize("name", ["..", ".", "a/b", "/abs", ".hidden", "", "a\x00b", "x" * 129,
                                  "naïve", "a b", "../etc"])
def test_unsafe_names_are_refused(name):
    with pytest.raises(ValueError, match="invalid"):
        validate_name(name, "run name")


@pytest.mark.parametrize("name", ["demo", "dual+ffn_share=none-s0", "exp_1.2", "-x"])
def test_safe_names_pass(name):
    assert validate_name(name) == name


def test_runs_root_honours_env(monkeypatch, tmp_path):
    monkeypatch.setenv("RUNS_DIR", str(tmp_path))
    assert runs_root() == tmp_path
    assert runs_root(tmp_path / "x") == tmp_path / "x"


def test_metrics_cursor_reads_only_new_lines_and_skips_torn_tail(tmp_path):
    run = Run.at(tmp_path, "exp", "r")
    run.write_config({"variant": "swiglu", "seed": 0})
    run.append_metrics({"step": 1, "train/loss": 5.0})
    records, cursor = run.read_metrics(0)
    assert records == [{"step": 1, "train/loss": 5.0}]
    with open(run.file("metrics.jsonl"), "a") as f:
        f.write('{"step": 2, "train/lo')  # a writer mid-line
    records, cursor2 = run.read_metrics(cursor)
    assert records == [] and cursor2 == cursor
    with open(run.file("metrics.jsonl"), "a") as f:
        f.write('ss": 4.0}\n{"garbage\n')
    records, cursor3 = run.read_metrics(cursor2)
    assert records == [{"step": 2, "train/loss": 4.0}]  # the garbage line is skipped, not fatal
    assert cursor3 == run.file("metrics.jsonl").stat().st_size


def test_truncate_and_cursor_past_end_restarts(tmp_path):
    run = Run.at(tmp_path, "exp", "r")
    run.write_config({})
    for step in range(1, 6):
        run.append_metrics({"step": step})
    _, cursor = run.read_metrics(0)
    run.truncate_metrics(2)
    records, _ = run.read_metrics(cursor)  # cursor beyond the rewritten file: start again
    assert [r["step"] for r in records] == [1, 2]


def test_status_is_merged_and_atomic(tmp_path):
    run = Run.at(tmp_path, "exp", "r")
    run.write_config({})
    run.write_status("running", pid=123, step=0)
    status = run.write_status("failed", error="boom")
    assert status["pid"] == 123 and status["state"] == "failed" and status["error"] == "boom"
    assert json.loads(run.file("status.json").read_text())["state"] == "failed"
    assert not [p for p in run.path.iterdir() if p.name.endswith(".tmp")]
    with pytest.raises(ValueError):
        run.write_status("exploded")


def test_checkpoint_round_trip_and_old_fallback(tmp_path):
    run = Run.at(tmp_path, "exp", "r")
    run.write_config({})
    weights = {"w": torch.arange(6.0).reshape(2, 3)}
    run.save_checkpoint(weights, {"optimizer": {"x": torch.ones(2)}, "tokens": 10}, step=5)
    run.save_checkpoint({"w": weights["w"] + 1}, {"optimizer": {}, "tokens": 20}, step=10)
    loaded, state = run.load_checkpoint()
    assert state["step"] == 10 and torch.equal(loaded["w"], weights["w"] + 1)
    assert torch.equal(run.load_weights()["w"], weights["w"] + 1)
    run.file("checkpoint").rename(run.file("checkpoint.old"))  # a crash mid-swap
    assert run.load_checkpoint()[1]["step"] == 10


class _Evil:
    def __reduce__(self):
        return (exec, ("import pathlib; pathlib.Path('PWNED').write_text('x')",))


def test_crafted_pickle_is_refused_not_executed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = Run.at(tmp_path, "exp", "r")
    run.write_config({})
    run.save_checkpoint({"w": torch.zeros(1)}, {"optimizer": {}}, step=1)
    with open(run.file("checkpoint") / "trainer_state.pt", "wb") as f:
        pickle.dump({"step": 1, "evil": _Evil()}, f)
    with pytest.raises(pickle.UnpicklingError):
        run.load_checkpoint()
    assert not (tmp_path / "PWNED").exists()


def _hold_lock(path, ready, release):
    with Run(path).lock():
        ready.set()
        release.wait(10)


def test_lock_is_liveness(tmp_path):
    run = Run.at(tmp_path, "exp", "r")
    run.write_config({})
    run.write_status("running", pid=999999)
    assert not run.is_alive() and run.effective_state() == "failed (orphaned)"
    ctx = multiprocessing.get_context("fork")
    ready, release = ctx.Event(), ctx.Event()
    proc = ctx.Process(target=_hold_lock, args=(run.path, ready, release))
    proc.start()
    assert ready.wait(10)
    assert run.is_alive() and run.effective_state() == "running"
    with pytest.raises(RunLockedError), run.lock():
        pass
    release.set()
    proc.join(10)
    assert not run.is_alive()


def test_listing_and_records(tmp_path):
    for name, variant in (("swiglu-s0", "swiglu"), ("dual-s0", "dual")):
        run = Run.at(tmp_path, "exp", name)
        run.write_config({"variant": variant, "seed": 0})
        run.append_metrics({"step": 1, "val/loss": 3.0})
        run.write_status("completed")
    (tmp_path / "exp" / "not-a-run").mkdir()
    (tmp_path / ".hidden").mkdir()
    assert list_experiments(tmp_path) == ["exp"]
    assert [r.name for r in list_runs(tmp_path, "exp")] == ["dual-s0", "swiglu-s0"]
    records = experiment_records(tmp_path, "exp")
    assert {r["variant"] for r in records} == {"swiglu", "dual"}
    assert records[0]["metrics"] == [{"step": 1, "val/loss": 3.0}]
    with pytest.raises(ValueError):
        list_runs(tmp_path, "../etc")


def test_watcher_reads_incrementally_and_restarts_after_rewrite(tmp_path):
    from core.runs import ExperimentWatcher

    run = Run.at(tmp_path, "exp", "dual-s0")
    run.write_config({"variant": "dual", "seed": 0})
    for step in (1, 2, 3):
        run.append_metrics({"step": step, "train/loss": float(step)})
    watcher = ExperimentWatcher(tmp_path, "exp")
    assert [r["step"] for r in watcher.poll()["dual-s0"]["metrics"]] == [1, 2, 3]
    run.append_metrics({"step": 4})
    reads = []
    original = Run.read_metrics
    def spy(self, cursor=0):
        reads.append(cursor)
        return original(self, cursor)
    Run.read_metrics = spy
    try:
        assert [r["step"] for r in watcher.poll()["dual-s0"]["metrics"]] == [1, 2, 3, 4]
        assert reads[-1] > 0  # only the new bytes were read
        run.truncate_metrics(2)  # a resume from step 2
        run.append_metrics({"step": 3, "train/loss": 9.0})
        metrics = watcher.poll()["dual-s0"]["metrics"]
    finally:
        Run.read_metrics = original
    assert [r["step"] for r in metrics] == [1, 2, 3] and metrics[-1]["train/loss"] == 9.0
    assert watcher.groups() == {"dual": [metrics]}
