"""Does ``torch.compile`` give this model the gradients eager mode gives? A self-check.

torch 2.11's compiler silently zeroed the gradient of an ``autograd.Function`` whose returned
tensor was edited in place (pytorch/pytorch#180642, fixed for 2.12): a compiled run then learned
nothing and reported no error. Our own Functions no longer do that, but the check stays: before a
run with ``train.compile=true`` trains, a tiny model of the same FFN variant (fused paths, a
several-chunk loss) is compiled and its gradients compared with eager ones on random data, on the
run's device. A mismatch refuses the run with one message instead of hours of silent failure.
"""

import dataclasses

import torch

from core.config import ModelConfig, variant_label
from core.model import build_model

SUPPORTED_TORCH = ">=2.11"  # as pyproject.toml declares; compile is checked on every version
TOLERANCE = 1e-3  # largest relative gradient error accepted (fp32; the bug gave exact zeros)

_checked: dict[tuple[str, str], float] = {}  # (variant, device type) -> error, once per process


def check_model_config(model: ModelConfig) -> ModelConfig:
    """`model`'s FFN options on a shape that compiles in seconds; the loss runs in 4 chunks."""
    return dataclasses.replace(model, vocab_size=97, hidden_size=32, intermediate_size=64,
                               num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                               max_position_embeddings=16, ffn_hidden=0, loss_chunk_tokens=8)


def _gradients(model: torch.nn.Module, forward, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    forward(x, y, return_logits=False).loss.backward()
    return {name: p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p)
            for name, p in model.named_parameters()}


def compiled_gradient_error(model: ModelConfig, device: torch.device | str) -> float:
    """Largest relative error, over parameters, of compiled against eager gradients of the
    training loss of a tiny model with `model`'s FFN options (0 = identical)."""
    generator = torch.Generator().manual_seed(0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        tiny = build_model(check_model_config(model)).to(device)
    with torch.no_grad():  # a zero-initialised router would leave its gradient trivially equal
        for parameter in tiny.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator).to(device) * 0.05)
    ids = torch.randint(0, 97, (2, 17), generator=generator).to(device)
    x, y = ids[:, :-1], ids[:, 1:]
    eager = _gradients(tiny, tiny, x, y)
    compiled = _gradients(tiny, torch.compile(tiny), x, y)
    worst = 0.0
    for name, reference in eager.items():
        scale = reference.norm().clamp(min=1e-12)
        worst = max(worst, ((compiled[name] - reference).norm() / scale).item())
    return worst


def require_compiled_gradients(model: ModelConfig, device: torch.device | str) -> None:
    """Raise ValueError when compiling gives this FFN variant wrong gradients on this torch."""
    key = (variant_label(model), torch.device(device).type)
    if key not in _checked:
        _checked[key] = compiled_gradient_error(model, device)
    if _checked[key] > TOLERANCE:
        raise ValueError(
            f"torch.compile gives wrong gradients with torch {torch.__version__} on "
            f"{torch.device(device).type} (compiled vs eager differ by {_checked[key]:.3g}, relative); "
            "train without it (--set train.compile=false), or try another torch version "
            f"(supported: torch{SUPPORTED_TORCH})")


__all__ = ["SUPPORTED_TORCH", "compiled_gradient_error", "require_compiled_gradients"]
