"""How long a grid will take on this machine, from step times measured once per run shape.

A calibration runs ``python -m core.train ... --time-steps N`` in a subprocess: the run's model,
micro-batch and optimizer on random tokens, a warm-up step, N timed steps and one evaluation.
Results are cached per machine (in the data cache) under the parts of the config that set the
cost of a step, so changing a seed, the step count or the learning rate needs no new
measurement. The measuring happens in the subprocess: the app only builds a command and reads
one JSON line.
"""

import hashlib
import json
import math
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from core.config import RunConfig
from core.fsutil import atomic_write_bytes
from core.jobs.local import run_to_end
from core.training.data import cache_dir

TIMED_STEPS = 3
CALIBRATION_TIMEOUT_S = 120.0
# A compiled step's calibration also compiles it: `tiny` took 208 s with a cold inductor cache and
# 22-28 s with a warm one on one shared EPYC core (bench/cpu-tiny-compile-payoff-2026-12-07.json).
COMPILE_TIMEOUT_S = 480.0
# Fields that change what a run does but not what one step costs.
_FREE = {"train": {"seed", "steps", "lr", "min_lr_ratio", "warmup_steps", "weight_decay", "beta1", "beta2",
                   "grad_clip", "eval_every", "log_every", "checkpoint_every"}}


@dataclass(frozen=True)
class StepTime:
    """One calibration: seconds per optimizer step and per evaluation, and the fixed start-up."""

    step_s: float
    eval_s: float
    startup_s: float
    micro_batch: int
    device: str


def cost_key(config: RunConfig) -> str:
    """Hash of everything in `config` that sets the cost of a step (model, batch, device...)."""
    raw = config.to_dict()
    raw.pop("data", None)  # the corpus does not change a step's cost
    for section, names in _FREE.items():
        for name in names:
            raw[section].pop(name, None)
    return hashlib.sha256(json.dumps(raw, sort_keys=True).encode()).hexdigest()[:16]


def calibration_command(config: RunConfig) -> list[str]:
    """The ``core.train`` command that times `config`'s steps on random tokens (no data).

    Every model and train field is passed with ``--set``, so the preset named only fills the
    data section, which timing never reads."""
    command = [sys.executable, "-m", "core.train", "--preset", "micro", "--time-steps", str(TIMED_STEPS),
               "--no-progress"]
    for section in ("model", "train"):
        for name, value in config.to_dict()[section].items():
            command += ["--set", f"{section}.{name}={json.dumps(value)}"]
    if config.model.ffn_module:  # a plugin variant: the child must load the same file
        command += ["--ffn-module", config.model.ffn_module]
    return command


def run_seconds(config: RunConfig, timing: StepTime, diagnostics_evals: int = 3) -> float:
    """Expected wall time of one run: start-up, every step, every evaluation (knock-out: three
    more for FFNs with diagnostics)."""
    train = config.train
    evaluations = math.ceil(train.steps / train.eval_every) + (diagnostics_evals if train.diagnostics else 0)
    return timing.startup_s + train.steps * timing.step_s + evaluations * timing.eval_s


class StepTimes:
    """Measured step times per run shape: cached on disk, measured in a background thread."""

    def __init__(self, path: Path | None = None):
        self.path = path or cache_dir() / "step-times.json"
        self._lock = threading.Lock()
        self._pending: list[tuple[str, RunConfig]] = []
        self._errors: dict[str, str] = {}
        self._worker: threading.Thread | None = None
        self._cache: tuple[int, dict] = (-1, {})  # (file mtime, entries): re-read only on change

    def get(self, config: RunConfig, measure_now: bool = True) -> StepTime | None:
        """The cached timing of `config`'s shape, or None (then a measurement is queued, unless
        `measure_now` is False: a calibration beside running jobs would slow them and, on a
        GPU, could take the memory they sized themselves to)."""
        key = cost_key(config)
        entry = self._read().get(key)
        if entry is not None:
            return StepTime(**entry)
        if not measure_now:
            return None
        with self._lock:
            if key not in self._errors and all(k != key for k, _ in self._pending):
                self._pending.append((key, config))
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(target=self._measure_all, daemon=True, name="calibration")
                self._worker.start()
        return None

    def error(self, config: RunConfig) -> str | None:
        """Why `config`'s shape could not be timed (None when it was, or still is being)."""
        return self._errors.get(cost_key(config))

    def _read(self) -> dict:
        """The cached entries; the file is parsed again only when it changed (the app asks
        every 2 s for every run of the grid on the Launch form)."""
        try:
            stamp = self.path.stat().st_mtime_ns
            if stamp != self._cache[0]:
                self._cache = (stamp, json.loads(self.path.read_text()))
        except (OSError, ValueError):
            return {}
        return self._cache[1]

    def _measure_all(self) -> None:
        while True:
            with self._lock:
                if not self._pending:
                    return
                key, config = self._pending[0]
            try:
                timing = measure(config)
                entries = {**self._read(), key: timing.__dict__}
                atomic_write_bytes(self.path, json.dumps(entries, indent=1, sort_keys=True).encode())
            except (OSError, ValueError, subprocess.SubprocessError) as error:
                self._errors[key] = str(error)
            with self._lock:
                self._pending.pop(0)


def measure(config: RunConfig, timeout: float | None = None) -> StepTime:
    """Run one calibration subprocess for `config` and parse its JSON line; ValueError when it
    fails or takes longer than `timeout` (a step too slow to time here: `paper` on a CPU).

    A compiled run is timed compiled: its compilation lands in ``startup_s`` (the warm-up step's
    excess over a steady one) and ``step_s`` is the compiled speed, as the run will see them."""
    if timeout is None:
        timeout = CALIBRATION_TIMEOUT_S + (COMPILE_TIMEOUT_S if config.train.compile else 0.0)
    started = time.perf_counter()
    try:
        result = run_to_end(calibration_command(config), timeout)
    except subprocess.TimeoutExpired:
        raise ValueError(f"timing its steps took over {timeout:.0f} s on this machine") from None
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise ValueError(result.stderr.strip().splitlines()[-1] if result.stderr.strip() else
                         f"calibration exited with {result.returncode}")
    timed = json.loads(result.stdout.strip().splitlines()[-1])
    busy = (TIMED_STEPS + 1) * timed["step_s"] + timed["eval_s"]
    return StepTime(step_s=timed["step_s"], eval_s=timed["eval_s"], startup_s=max(0.0, wall - busy),
                    micro_batch=timed["micro_batch"], device=timed["device"])


__all__ = ["StepTime", "StepTimes", "cost_key", "calibration_command", "run_seconds", "measure"]
