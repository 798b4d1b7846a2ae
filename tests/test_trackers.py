"""Metric mirrors (--log-to): each backend holds what metrics.jsonl holds, and a tracker that is
missing or raises never changes or stops a run."""

import glob
import json
import math
import os
import struct
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from core import trackers
from core.jobs import local, sweep
from core.jobs import manager as jobs
from core.runs import Run
from core.trackers import BACKENDS, Mirror, RunInfo, metric_values, parse_backends, wandb_mode
from core.training import cli as train_cli
from tests.conftest import run_cli
from ui.service import Explorer

SHORT = ["--ffn", "dual", "--seed", "0", "--steps", "6", "--no-progress", "--set", "log_every=1",
         "--set", "eval_every=3", "--set", "checkpoint_every=3"]
VARYING = {"elapsed_s", "throughput/tok_s", "mem/peak_gb"}  # wall time and memory differ run to run


def _records(run_dir: Path) -> list[dict]:
    return Run(run_dir).read_metrics(0)[0]


def _expected(run_dir: Path) -> dict[int, dict[str, float]]:
    """{step: numeric values} of a run's metrics.jsonl: what every mirror must hold."""
    records = _records(run_dir)
    assert records and any("routing/L0/sparse_weight" in r for r in records)
    return {r["step"]: metric_values(r) for r in records}


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


def _assert_holds(stored: dict[int, dict], expected: dict[int, dict]) -> None:
    """`stored` has exactly the steps, keys and values of `expected` (NaN equals NaN)."""
    assert stored.keys() == expected.keys()
    for step, values in expected.items():
        assert stored[step].keys() == values.keys(), step
        assert all(_same(stored[step][k], v) for k, v in values.items()), (step, stored[step], values)


# parsing ---------------------------------------------------------------------------------------
def test_parse_backends():
    assert parse_backends("trackio, TensorBoard,,trackio") == ("trackio", "tensorboard")
    assert parse_backends(["wandb"]) == ("wandb",) and parse_backends("") == parse_backends(None) == ()
    with pytest.raises(ValueError, match="unknown tracker 'mlflow'; choose from trackio, tensorboard, wandb"):
        parse_backends("trackio,mlflow")


@pytest.mark.parametrize("module", [train_cli, sweep])
def test_an_unknown_backend_is_one_clear_error_and_no_run_folder(module, tmp_path, capsys):
    args = ["--experiment", "e", "--ffn", "swiglu", "--runs-dir", str(tmp_path / "runs"), "--log-to", "tb"]
    assert module.main(args) == 2
    err = capsys.readouterr().err
    assert err.strip() == "error: unknown tracker 'tb'; choose from trackio, tensorboard, wandb"
    assert not (tmp_path / "runs").exists()


# the three real backends, from one CLI run ----------------------------------------------------
@pytest.fixture(scope="module")
def mirrored(tmp_path_factory):
    """A micro run mirrored to every backend, W&B without credentials nor WANDB_MODE."""
    tmp = tmp_path_factory.mktemp("mirrored")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "TRACKIO_"))}
    env.update(TRACKIO_DIR=str(tmp / "trackio"), NETRC=str(tmp / "no-netrc"),
               WANDB_CONFIG_DIR=str(tmp / "wandb-config"), WANDB_CACHE_DIR=str(tmp / "wandb-cache"),
               WANDB_DATA_DIR=str(tmp / "wandb-data"))
    run_dir = tmp / "exp" / "dual-s0"
    result = run_cli("core.train", *SHORT, "--run-dir", str(run_dir), "--log-to", ",".join(BACKENDS),
                     env=env, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "metrics mirror" not in result.stderr, result.stderr[-3000:]
    return run_dir, tmp / "trackio"


def test_trackio_holds_the_metrics(mirrored, monkeypatch):
    run_dir, store = mirrored
    sqlite_storage = pytest.importorskip("trackio.sqlite_storage")
    monkeypatch.setattr(sqlite_storage, "TRACKIO_DIR", store)  # read at import: point it at our store
    logs = sqlite_storage.SQLiteStorage.get_logs("exp", "dual-s0")
    stored = {log.pop("step"): {k: v for k, v in log.items() if k != "timestamp"} for log in logs}
    _assert_holds(stored, _expected(run_dir))
    config = sqlite_storage.SQLiteStorage.get_run_config("exp", "dual-s0")
    assert config["_Group"] == "dual" and config["model"] == Run(run_dir).read_config()["model"]


def test_tensorboard_holds_the_metrics(mirrored):
    run_dir, _ = mirrored
    accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    events = accumulator.EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    expected = _expected(run_dir)
    assert set(events.Tags()["scalars"]) == {k for values in expected.values() for k in values}
    for tag in events.Tags()["scalars"]:
        stored = {e.step: e.value for e in events.Scalars(tag)}
        wanted = {step: float(np.float32(v[tag])) for step, v in expected.items() if tag in v}
        assert stored.keys() == wanted.keys() and all(_same(stored[s], wanted[s]) for s in wanted), tag


def test_a_resumed_tensorboard_run_hides_what_the_lost_part_logged(tmp_path):
    from core.trackers import TensorBoardBackend

    accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    first = TensorBoardBackend(RunInfo("e", "r", "v", tmp_path, {}))
    for step in (10, 20, 30):  # a checkpoint at 20, then the run died after logging 30
        first.log(step, {"train/loss": float(step)})
    first.close()
    resumed = TensorBoardBackend(RunInfo("e", "r", "v", tmp_path, {}, resume=True, start_step=20))
    resumed.log(30, {"train/loss": 3.0})
    resumed.close()
    events = accumulator.EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("train/loss")] == [(10, 10.0), (20, 20.0), (30, 3.0)]


def _wandb_records(path: str):
    """The protobuf records of a .wandb file (a LevelDB-style log of 32 KiB blocks after a 7-byte
    header; each chunk: crc32 u32, length u16, type u8 = full 1 / first 2 / middle 3 / last 4)."""
    from wandb.proto import wandb_internal_pb2

    data = Path(path).read_bytes()
    assert data[:4] == b":W&B"
    pos, pending = 7, b""
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:  # a block's tail too short for a chunk header is padding
            pos += 32768 - pos % 32768
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        pending, pos = pending + data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def test_wandb_holds_the_metrics_offline_in_the_run_folder(mirrored):
    run_dir, _ = mirrored
    pytest.importorskip("wandb")
    files = glob.glob(str(run_dir / "wandb" / "offline-run-*" / "run-*.wandb"))
    assert len(files) == 1  # offline (no credentials) and inside the run folder
    history, runs = {}, []
    for record in _wandb_records(files[0]):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            runs.append(record.run)
        elif kind == "history":
            items = {item.key or "/".join(item.nested_key): json.loads(item.value_json)
                     for item in record.history.item}
            history[items.pop("_step")] = {k: v for k, v in items.items() if not k.startswith("_")}
    assert [(r.project, r.display_name, r.run_group) for r in runs] == [("exp", "dual-s0", "dual")]
    _assert_holds(history, _expected(run_dir))


# failures never touch the run ---------------------------------------------------------------------
def _train_in_process(run_dir: Path, *extra: str) -> list[dict]:
    assert train_cli.main([*SHORT, "--run-dir", str(run_dir), *extra]) == 0
    return [{k: v for k, v in r.items() if k not in VARYING} for r in _records(run_dir)]


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    """The metric lines of the same run without mirrors."""
    return _train_in_process(tmp_path_factory.mktemp("plain") / "run")


def _raising_backend(first_failure: str):
    """A backend that raises on its `first_failure` call (open, log or close) and every later one."""
    stages = ("open", "log", "close")
    failing = set(stages[stages.index(first_failure):])

    class Raising:
        package = "raising"

        def __init__(self, info: RunInfo):
            self._fail("open")

        def _fail(self, stage: str) -> None:
            if stage in failing:
                raise RuntimeError(f"boom at {stage}")

        def log(self, step: int, values: dict) -> None:
            self._fail("log")

        def close(self) -> None:
            self._fail("close")

    return Raising


@pytest.mark.parametrize("stage", ["open", "log", "close"])
def test_a_raising_backend_warns_once_and_changes_nothing(stage, plain, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(trackers.ADAPTERS, "wandb", _raising_backend(stage))
    assert _train_in_process(tmp_path / "run", "--log-to", "wandb") == plain
    err = capsys.readouterr().err
    assert err.count("warning: metrics mirror to wandb disabled") == 1
    assert f"{stage} failed: RuntimeError: boom at {stage}" in err
    assert Run(tmp_path / "run").read_status()["state"] == "completed"


def test_a_missing_package_warns_once_and_the_run_completes(plain, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "trackio", None)  # `import trackio` now raises ImportError
    assert _train_in_process(tmp_path / "run", "--log-to", "trackio") == plain
    err = capsys.readouterr().err
    assert err.count("warning: metrics mirror to trackio disabled: could not import trackio") == 1
    assert "pip install trackio" in err


def test_a_stuck_backend_never_holds_the_trainer(monkeypatch, capsys):
    release = threading.Event()

    class Stuck:
        def __init__(self, info: RunInfo):
            pass

        def log(self, step: int, values: dict) -> None:
            release.wait(10)

        def close(self) -> None:
            pass

    monkeypatch.setattr(trackers, "BACKENDS", (*BACKENDS, "stuck"))
    monkeypatch.setitem(trackers.ADAPTERS, "stuck", Stuck)
    mirror = Mirror(["stuck"], RunInfo("e", "r", "v", Path(".")), queue_size=50)
    started = time.monotonic()
    for step in range(1, 201):  # more lines than the queue holds: the excess is dropped
        mirror.log({"step": step, "train/loss": 1.0})
    assert time.monotonic() - started < 0.5
    mirror.close(timeout=0.3)
    assert time.monotonic() - started < 1.5
    release.set()
    err = capsys.readouterr().err
    assert err.count("fell behind") == 1 and err.count("did not finish within 0.3 s") == 1


# W&B's mode and folder, with a stand-in wandb module -------------------------------------------
class _FakeWandb:
    def __init__(self):
        self.calls = []

    def Settings(self, **kwargs):  # noqa: N802 - wandb's name
        return kwargs

    def init(self, **kwargs):
        self.calls.append(kwargs)
        return self


@pytest.mark.parametrize("env, mode", [
    ({}, "offline"), ({"WANDB_API_KEY": "k" * 40}, "online"), ({"WANDB_MODE": "offline"}, "offline"),
    ({"WANDB_MODE": "disabled", "WANDB_API_KEY": "k" * 40}, "disabled"),
    ({"WANDB_MODE": "online"}, "offline"),  # asked for, but nobody is logged in
])
def test_wandb_goes_online_only_when_logged_in(env, mode, tmp_path, monkeypatch):
    for key in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "WANDB_DIR"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert wandb_mode() == mode


def test_wandb_writes_in_the_run_folder_unless_wandb_dir_is_set(tmp_path, monkeypatch):
    fake = _FakeWandb()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    monkeypatch.delenv("WANDB_DIR", raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    info = RunInfo("exp", "dual-s0", "dual", tmp_path, {"seed": 0})
    trackers.WandbBackend(info)
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "elsewhere"))
    trackers.WandbBackend(info)
    assert fake.calls[0]["dir"] == str(tmp_path) and "dir" not in fake.calls[1]
    assert {c["mode"] for c in fake.calls} == {"offline"}
    first = fake.calls[0]
    assert (first["project"], first["name"], first["group"]) == ("exp", "dual-s0", "dual")


# the app's queue and the sweep pass the trackers to their children ------------------------------
class _FakePopen:
    commands: list[list[str]] = []
    pid = 2**30  # beyond pid_max: nothing to hit even if it were signalled
    returncode = 0

    def __init__(self, command, **kwargs):
        _FakePopen.commands.append(command)

    def poll(self):
        return None


def _log_to(command: list[str]) -> str | None:
    return command[command.index("--log-to") + 1] if "--log-to" in command else None


def test_the_job_queue_passes_trackers_to_its_children_and_keeps_configs(tmp_path, monkeypatch):
    monkeypatch.setattr(local.subprocess, "Popen", _FakePopen)
    monkeypatch.setattr(_FakePopen, "commands", [])
    explorer = Explorer(tmp_path, max_concurrent=2, start_jobs=False)
    try:
        with pytest.raises(ValueError, match="unknown tracker 'mlflow'"):
            explorer.launch("e", "micro", ["swiglu"], "0", steps=5, trackers=["mlflow"])
        assert not any(tmp_path.rglob("*.json"))
        explorer.launch("e", "micro", ["swiglu"], "0", steps=5, trackers=["wandb", "tensorboard"])
        explorer.launch("f", "micro", ["swiglu"], "0", steps=5)
        explorer.jobs.tick()
    finally:
        explorer.close()
    assert [_log_to(c) for c in _FakePopen.commands] == ["wandb,tensorboard", None]
    configs = [Run.at(tmp_path, e, "swiglu-s0").read_config() for e in ("e", "f")]
    assert configs[0] == configs[1]  # the trackers are no part of the run's identity
    # A restarted app launches a queued run with the trackers it was queued with.
    restarted = jobs.JobManager(tmp_path, start=False)
    restarted.tick()
    restarted.shutdown()
    assert _log_to(_FakePopen.commands[-1]) == "wandb,tensorboard"


def test_the_sweep_passes_trackers_to_its_runs(tmp_path, monkeypatch, capsys):
    class Done(_FakePopen):
        def poll(self):
            return 0

    monkeypatch.setattr(local.subprocess, "Popen", Done)
    monkeypatch.setattr(_FakePopen, "commands", [])
    args = ["--experiment", "s", "--ffn", "swiglu", "dual", "--runs-dir", str(tmp_path), "--no-progress",
            "--log-to", "tensorboard,trackio"]
    sweep.main(args)
    assert [_log_to(c) for c in _FakePopen.commands] == ["tensorboard,trackio"] * 2
