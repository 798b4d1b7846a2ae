"""Launching runs without torch: a grid's cells, the `core.train` command line and environment of
one run, and the record its config.json starts as.

Orchestration (sweeps, the job queue, the Hub, the app) builds commands here, so it never imports
the trainer or torch; the trainer itself runs in the child process.
"""

import os
import platform
import sys
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from core.config import RunConfig, apply_overrides, parse_variant, preset, variant_label
from core.runs import Run

# glibc's allocator tuned for training: large activation buffers stay mapped instead of being
# returned to the OS each step (page faults were a large share of a CPU step).
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "1000000000", "MALLOC_TRIM_THRESHOLD_": "1000000000"}


@dataclass
class Cell:
    """One (variant, seed) run of a grid and the CLI flags that reproduce its config."""

    label: str
    seed: int
    config: RunConfig
    flags: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.label}-s{self.seed}"


def grid(preset_name: str, variants: list[str], seeds: list[int], overrides: list[str],
         steps: int | None = None, data: str | None = None) -> list[Cell]:
    """Validate and build every cell up front, so a bad option fails before anything runs."""
    if not variants:
        raise ValueError("choose at least one variant (--ffn or --variant)")
    if not seeds:
        raise ValueError("choose at least one seed (--seeds)")
    cells = []
    for label in dict.fromkeys(variants):
        for seed in dict.fromkeys(seeds):
            flags = ["--preset", preset_name, "--variant", label, "--seed", str(seed)]
            flags += ["--steps", str(steps)] * (steps is not None) + ["--data", data] * (data is not None)
            flags += [arg for item in overrides for arg in ("--set", item)]
            extra = parse_variant(label)[1] + [f"train.seed={seed}"]
            extra += [f"train.steps={steps}"] * (steps is not None)
            extra += [f"data.source={data}"] * (data is not None)
            config = apply_overrides(preset(preset_name), extra + overrides)
            if config.model.ffn_module:  # a plugin variant: the child process loads the same file
                flags += ["--ffn-module", config.model.ffn_module]
            cells.append(Cell(variant_label(config.model), seed, config, flags))
    return cells


def train_command(run: Run, flags: list[str], threads: int, resume: bool,
                  trackers: tuple[str, ...] | list[str] = ()) -> list[str]:
    """The `python -m core.train` command line of one run (mirroring its metrics to `trackers`)."""
    cmd = [sys.executable, "-m", "core.train", "--run-dir", str(run.path), *flags,
           "--threads", str(threads), "--no-progress"]
    cmd += ["--log-to", ",".join(trackers)] * bool(trackers)
    return cmd + ["--resume"] * resume


def train_env(threads: int) -> dict[str, str]:
    """Environment of a training subprocess: thread count and the tuned allocator."""
    repo = str(Path(__file__).resolve().parents[2])
    path = os.pathsep.join(p for p in (repo, os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, **MALLOC_ENV, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": path,
            "PYTHONUNBUFFERED": "1"}


def run_record(config: RunConfig, device: str, world_size: int = 1, micro_batch: int | None = None,
               torch_version: str | None = None) -> dict:
    """What config.json holds: the run config plus labels, the micro-batch in use and versions
    (torch's from the installed package unless the trainer passes its own)."""
    if torch_version is None:
        try:
            torch_version = metadata.version("torch")
        except metadata.PackageNotFoundError:
            torch_version = "not installed"
    return {**config.to_dict(), "variant": variant_label(config.model), "seed": config.train.seed,
            "device": str(device), "world_size": world_size, "micro_batch": micro_batch,
            "versions": {"torch": torch_version, "python": platform.python_version()}}
