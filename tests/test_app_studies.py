"""Studies through the app's API (gradio_client), against a real server process: the three
endpoints, bad launches refused with one message and nothing written, and a study that outlives
its app (SIGKILL in the first phase, a restart) with each run launched once."""

import time
from pathlib import Path

import pytest
from gradio_client import Client

from core.runs import Run, list_experiments, list_runs
from tests.app_server import running_app, start_app

MICRO = """preset = "micro"
variants = ["swiglu", "dual"]
seeds = [0, 1]
steps = 8
lrs = [0.002, 0.004]
overrides = ["eval_every=4", "checkpoint_every=4", "log_every=4"]

[select]
fraction = 1.0
"""
BAD = [("a/b", MICRO, "invalid study name"), ("x" * 300, MICRO, "invalid study name"),
       ("cpu-scaling", MICRO, "built-in"), ("mine", "preset = [", "not valid TOML"),
       ("mine", MICRO.replace("seeds = [0, 1]", "seeds = [" + ", ".join(map(str, range(5000))) + "]"),
        "at most 500"),
       ("mine", MICRO.replace('lrs = [0.002, 0.004]', 'lrs = [0.002, 0.002]'), "duplicate values"),
       ("mine", MICRO + '\n[axis]\nkey = "model.nope"\nvalues = [1]\n', "unknown key 'model.nope'"),
       ("mine", MICRO.replace('"dual"', '"nope"'), "unknown ffn 'nope'"),
       ("never-ran", "", "unknown study 'never-ran'")]


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


@pytest.mark.slow
def test_study_endpoints_and_bad_launches(tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    with running_app(runs) as url:
        client = Client(url, verbose=False)
        listed = {s["name"]: s for s in client.predict(api_name="/studies")}
        assert listed["cpu-scaling"]["source"] == "built-in" and listed["cpu-scaling"]["runs"] == 70
        view = client.predict("cpu-variants", api_name="/study")
        assert view["rows"] == [] and view["progress"]["waiting"] == 25
        for name, text, message in BAD:
            with pytest.raises(Exception, match=message):
                client.predict(name, text, api_name="/study_launch")
        assert _files(runs) == []  # nothing written by any refused launch


def _wait_for_study(client: Client, name: str, state: str, timeout_s: float) -> dict:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        view = client.predict(name, api_name="/study")
        if view["progress"]["state"] == state:
            return view
        time.sleep(2)
    raise TimeoutError(f"study {name} not {state}: {view['progress']}")


def _first_phase_running(runs: Path, timeout_s: float = 120) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        states = [Run.at(runs, e, r).read_status().get("state") for e in list_experiments(runs)
                  for r in ("swiglu-s0", "dual-s0")]
        if "running" in states:
            return
        time.sleep(0.2)
    raise TimeoutError("no run of the first phase started")


@pytest.mark.slow
def test_a_study_outlives_a_killed_app_and_each_run_is_launched_once(tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    proc, url, log = start_app(runs)
    try:
        started = Client(url, verbose=False).predict("mine", MICRO, api_name="/study_launch")
        assert started["study"] == "mine" and started["queued"] + started["running"] >= 1
        _first_phase_running(runs)
    finally:
        proc.kill()  # SIGKILL: no shutdown code runs
        proc.wait()
        log.close()
    with running_app(runs) as url:
        client = Client(url, verbose=False)
        view = _wait_for_study(client, "mine", "completed", timeout_s=600)
    assert view["progress"]["completed"] == 6 and view["progress"]["failed"] == 0
    trained = [run for experiment in list_experiments(runs) for run in list_runs(runs, experiment)]
    assert len(trained) == 6
    for run in trained:
        text = run.file("train.log").read_text()
        assert text.count("final val loss") == 1 and "error" not in text, run.path
        assert run.read_status()["start_step"] == 0  # trained once from the start, never resumed
    selected = [r for r in view["rows"] if r["selected"]]
    assert sorted(r["variant"] for r in selected) == ["dual", "swiglu"]
    assert all(r["n"] == 2 for r in selected)  # seed 0 from the sweep, seed 1 from the final phase
