"""What every FFN module offers the rest of the code base: the forward contract and optional hooks.

A variant subclasses :class:`FFN` and overrides only the hooks it has something to say in;
diagnostics, inspection and the trainer call these hooks and never look inside a variant.
"""

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from core.variants import FFNSpec, hidden_size

# A split of a layer's forward for the pathway-interference probe: (forward that uses the given
# weights, weights the dense path uses, weights the sparse path uses, names of shared matrices).
PathSplit = tuple[Callable, dict[str, torch.Tensor], dict[str, torch.Tensor], list[str]]


@dataclass
class UnitActivity:
    """What :meth:`FFN.unit_activity` reports for a batch of tokens.

    `values` [..., units]: each unit's activation, > 0 exactly where the unit is active (its
    output is non-zero), 0 elsewhere; never negative. `score` [..., units], optional: the
    quantity a learned cut compares with `cut` (active where score > cut), histogrammed over
    `score_range` with the cut marked. `unit` names what one column is ("unit", "expert").
    """

    values: torch.Tensor
    score: torch.Tensor | None = None
    cut: float | None = None
    score_range: tuple[float, float] = (-6.0, 6.0)
    unit: str = "unit"


class FFN(nn.Module):
    """Base of every FFN: ``forward(x [B, T, d], return_stats) -> (y, aux_loss, stats)``.

    `stats` holds, when asked for, each statistic the spec declares: a [B, T] tensor for a
    per-token one, a scalar for a per-layer one.
    """

    spec: FFNSpec  # set by core.variants.register_ffn

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.hidden = hidden_size(config)

    def post_init(self) -> None:
        """Called after the model's normal init of every Linear (e.g. to zero a router)."""

    def probe_sums(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Additive statistics of this layer's input `x` (no grad), pooled over an evaluation;
        {} = this variant logs no per-layer diagnostics."""
        return {}

    def probe_metrics(self, sums: dict[str, torch.Tensor]) -> dict[str, float]:
        """Metrics ``{"group/name": value}`` from pooled :meth:`probe_sums` (logged as
        ``group/L{i}/name``)."""
        return {}

    def watched_parameters(self) -> dict[str, torch.Tensor]:
        """Scalar parameters whose |gradient| is logged, as ``{"group/name": parameter}``."""
        return {}

    def path_split(self) -> PathSplit | None:
        """Two paths sharing weights, for the interference probe; None when there are none."""
        return None

    def unit_activity(self, x: torch.Tensor) -> UnitActivity | None:
        """Per-unit activation of this layer's sparse units on input `x` [..., d] (no grad),
        for corpus statistics (activation frequency, dead units, top activating contexts);
        None = this variant has no sparse units (a dense FFN)."""
        return None

    def knockouts(self) -> dict[str, Callable[[], AbstractContextManager]]:
        """Named contexts under which the layer runs a reduced model (e.g. one path only); the
        final evaluation reports the val loss under each, against the full model's ("mix")."""
        return {}


@contextmanager
def patched_forwards(modules: list[nn.Module], forwards: list[Callable]) -> Iterator[None]:
    """Temporarily replace `modules`' forward (an instance attribute, so the class method returns
    after); patches nest: an enclosing patch is restored on exit."""
    previous = [module.__dict__.get("forward") for module in modules]
    try:
        for module, forward in zip(modules, forwards):
            module.forward = forward
        yield
    finally:
        for module, before in zip(modules, previous):
            module.__dict__.pop("forward", None)
            if before is not None:
                module.forward = before


def unit_sparsity(tokens: float, zeros: float, unit_active: torch.Tensor) -> dict[str, float]:
    """zero_frac, dead_frac and always_on_frac of a hidden layer from pooled counts: `zeros` exact
    zeros over `tokens` x h cells, `unit_active` [h] tokens on which each unit was active."""
    return {"zero_frac": zeros / (tokens * unit_active.numel()),
            "dead_frac": (unit_active == 0).double().mean().item(),
            "always_on_frac": (unit_active == tokens).double().mean().item()}


def linear(d_in: int, d_out: int) -> nn.Linear:
    """A bias-free projection, as every FFN matrix here."""
    return nn.Linear(d_in, d_out, bias=False)


__all__ = ["FFN", "PathSplit", "UnitActivity", "linear", "patched_forwards", "unit_sparsity"]
