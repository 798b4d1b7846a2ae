"""Shared fixtures: offline Hub, deterministic torch, tiny configs."""

import dataclasses
import os
import sys
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# One token/tokenizer cache per test session (subprocesses inherit it): never the user's cache.
os.environ.setdefault("EXPLORER_CACHE", tempfile.mkdtemp(prefix="explorer-test-cache-"))
# transformers copies remote code (exports of non-SwiGLU variants) here: never the user's cache.
os.environ.setdefault("HF_MODULES_CACHE", tempfile.mkdtemp(prefix="explorer-test-hf-modules-"))

import shutil  # noqa: E402
import subprocess  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from core import variants  # noqa: E402
from core.config import ModelConfig  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
# Short micro runs shared by the training, sweep and app tests.
FAST = ["--steps", "40", "--set", "eval_every=20", "--set", "checkpoint_every=20",
        "--set", "log_every=5"]
# torch.compile's CPU backend (inductor) builds C++.
needs_compiler = pytest.mark.skipif(not (shutil.which("c++") or shutil.which("g++")),
                                    reason="inductor needs a C++ compiler")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def build_ffn(config: ModelConfig) -> torch.nn.Module:
    """One FFN layer of `config`'s variant."""
    return variants.module_class(config.ffn)(config)


def tiny_model_config(**overrides) -> ModelConfig:
    """A very small model shape for unit tests (GQA included); keywords that are not ModelConfig
    fields are the variant's options (ffn_share=..., moe_experts=...)."""
    base = dict(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32)
    fields = {f.name for f in dataclasses.fields(ModelConfig)}
    base.update({k: v for k, v in overrides.items() if k in fields})
    base["ffn_options"] = {k: v for k, v in overrides.items() if k not in fields}
    return ModelConfig(**base)


def run_cli(module: str, *args: str, timeout: float = 600, **kwargs) -> subprocess.CompletedProcess:
    """Run `python -m module args` from the repo root, capturing output."""
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout, **kwargs)


@pytest.fixture(scope="session")
def micro_experiment(tmp_path_factory):
    """A micro sweep: swiglu and dual x seeds 0, 1 (made once per test session)."""
    root = tmp_path_factory.mktemp("runs")
    result = run_cli("core.sweep", "--experiment", "micro", "--preset", "micro", "--ffn", "swiglu",
                     "dual", "--seeds", "0", "1", "--runs-dir", str(root), "--no-progress", *FAST)
    assert result.returncode == 0, result.stdout + result.stderr
    return root, "micro", result.stdout


@pytest.fixture(scope="module")
def slurm_cluster(tmp_path_factory):
    """A real one-node SLURM cluster for the module's tests (skipped without root or the
    packages); its daemons are stopped by pid afterwards."""
    from tests.slurm_cluster import SlurmCluster, available

    why = available()
    if why:
        pytest.skip(why)
    with SlurmCluster(tmp_path_factory.mktemp("slurm")) as cluster:
        yield cluster


# bf16 keeps 8 significant bits: one rounding is off by up to 2^-8 (0.4%) of the value. A value
# or gradient of a tiny model passes through a handful of rounded products (forward and
# backward, two layers), measured at 0.3-1.5% relative error against float64; 4% is about ten
# roundings' worth, while a real fault (a wrong mask, a lost term, a path dropped) is off by tens
# of percent.
BF16_TOLERANCE = 0.04


def relative_error(value: torch.Tensor, reference: torch.Tensor) -> float:
    """|value - reference| / |reference| (Frobenius norms), computed in float64."""
    value, reference = value.detach().double(), reference.detach().double()
    return ((value - reference).norm() / reference.norm()).item()


def bf16_autocast():
    """The training autocast of a bf16 run on CPU."""
    return torch.autocast("cpu", dtype=torch.bfloat16)
