"""Launching runs without torch: a grid's cells, the `core.train` command line and environment of
one run, the record its config.json starts as, what a run asks of the machine (Resources) and the
command one node of it executes (core.train, or torchrun around it).

Orchestration (sweeps, the job queue, the Hub, the app) builds commands here, so it never imports
the trainer or torch; the trainer itself runs in the child process.
"""

import math
import os
import platform
import re
import sys
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from core.config import RunConfig, apply_overrides, parse_variant, preset, variant_label
from core.runs import Run

RDZV_PORT = 29400  # torchrun's c10d rendezvous port on a multi-node run's first node
PREEMPT_SIGNAL = "USR1"  # what the trainer checkpoints on (core.train)
SIGNAL_DELAY_S = 90  # SLURM's warning ahead of the time limit

# glibc's allocator tuned for training: large activation buffers stay mapped instead of being
# returned to the OS each step (page faults were a large share of a CPU step).
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "1000000000", "MALLOC_TRIM_THRESHOLD_": "1000000000"}


def reexec_with_malloc_env() -> None:
    """Re-run this ``python -m core.train`` process once with :data:`MALLOC_ENV` (Linux only;
    ``EXPLORER_NO_MALLOC_TUNING`` opts out). Called before torch is imported, so the process
    that is replaced has imported nothing heavy (a second torch import cost ~2 s per run)."""
    if platform.system() != "Linux" or os.environ.get("EXPLORER_NO_MALLOC_TUNING"):
        return
    if all(os.environ.get(k) == v for k, v in MALLOC_ENV.items()) or "WORLD_SIZE" in os.environ:
        return
    os.execve(sys.executable, [sys.executable, "-m", "core.train", *sys.argv[1:]],
              {**os.environ, **MALLOC_ENV})


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
               torch_version: str | None = None, precision: dict | None = None) -> dict:
    """What config.json holds: the run config plus labels, the micro-batch and the precision in
    use (None until the trainer knows them: the dtype ``auto`` resolved to and whether the CPU
    has native bf16) and versions (torch's from the installed package unless the trainer passes
    its own)."""
    if torch_version is None:
        try:
            torch_version = metadata.version("torch")
        except metadata.PackageNotFoundError:
            torch_version = "not installed"
    return {**config.to_dict(), "variant": variant_label(config.model), "seed": config.train.seed,
            "device": str(device), "world_size": world_size, "micro_batch": micro_batch,
            "precision": precision, "versions": {"torch": torch_version, "python": platform.python_version()}}


# -- resources and the command of one node of a run -----------------------------------------------
_TIME = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$")
TIME_FORMATS = "MINUTES, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS"


def time_minutes(text: str) -> int:
    """SLURM's time-limit formats as whole minutes (rounded up); ValueError names the formats."""
    match = _TIME.match(text.strip())
    if not match:
        raise ValueError(f"time limit {text!r} is not a SLURM time ({TIME_FORMATS})")
    days, a, b, c = match.groups()
    if days is not None:  # D-HH[:MM[:SS]]
        seconds = int(days) * 86400 + int(a) * 3600 + int(b or 0) * 60 + int(c or 0)
    elif c is not None:  # HH:MM:SS
        seconds = int(a) * 3600 + int(b) * 60 + int(c)
    elif b is not None:  # MM:SS
        seconds = int(a) * 60 + int(b)
    else:  # MINUTES
        seconds = int(a) * 60
    if seconds <= 0:
        raise ValueError(f"time limit {text!r} must be longer than zero")
    return math.ceil(seconds / 60)


@dataclass(frozen=True)
class Resources:
    """What one run asks of a cluster."""

    partition: str | None = None  # SLURM partition (None: the cluster's default)
    gpus_per_run: int = 0  # GPUs of one run, spread evenly over its nodes
    nodes_per_run: int = 1  # nodes of one run (more than one: torchrun's c10d rendezvous)
    ranks_per_run: int = 0  # training processes of one run; 0 = one per GPU, or 1 without GPUs
    cpus_per_rank: int = 2  # CPU cores (and torch threads) per training process
    time: str = "1:00:00"  # wall-clock limit of one job; longer runs resume in requeued jobs
    array_parallelism: int = 64  # most runs of one grid running at once

    def ranks(self) -> int:
        return self.ranks_per_run or max(1, self.gpus_per_run)

    def ranks_per_node(self) -> int:
        return self.ranks() // self.nodes_per_run

    def gpus_per_node(self) -> int:
        return self.gpus_per_run // self.nodes_per_run

    def check(self) -> "Resources":
        """Self-consistency (no cluster needed); returns self. ValueError names the bad field."""
        for name in ("gpus_per_run", "ranks_per_run"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name.replace('_', '-')} must be >= 0")
        for name in ("nodes_per_run", "cpus_per_rank", "array_parallelism"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name.replace('_', '-')} must be >= 1")
        if self.ranks() % self.nodes_per_run or self.gpus_per_run % self.nodes_per_run:
            raise ValueError(f"{self.ranks()} ranks and {self.gpus_per_run} GPUs per run do not spread "
                             f"evenly over {self.nodes_per_run} nodes")
        if self.gpus_per_run and self.ranks() != self.gpus_per_run:
            raise ValueError(f"a GPU run trains one rank per GPU: ranks-per-run {self.ranks_per_run} "
                             f"!= gpus-per-run {self.gpus_per_run}")
        if self.partition is not None and not re.fullmatch(r"[\w.-]+", self.partition):
            raise ValueError(f"partition {self.partition!r} is not a SLURM partition name")
        time_minutes(self.time)
        return self


@dataclass(frozen=True)
class Launch:
    """One run to start: its folder, its core.train flags and the trackers it mirrors to."""

    run: Run
    flags: tuple[str, ...]
    trackers: tuple[str, ...] = ()


def task_command(launch: Launch, resources: Resources, threads: int, resume: bool,
                 rendezvous: str | None = None, rdzv_id: str = "run") -> list[str]:
    """The command one node of a run executes: core.train, or torchrun around it for several ranks
    (`rendezvous` host:port of the first node when the run spans nodes)."""
    command = train_command(launch.run, list(launch.flags), threads, resume, launch.trackers)
    if resources.ranks() == 1:
        return command
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node",
                str(resources.ranks_per_node())]
    if resources.nodes_per_run == 1:
        torchrun += ["--standalone"]
    else:
        torchrun += ["--nnodes", str(resources.nodes_per_run), "--rdzv-backend", "c10d",
                     "--rdzv-endpoint", rendezvous or "", "--rdzv-id", rdzv_id]
    return torchrun + command[1:]  # command[1:] = "-m core.train ..."
