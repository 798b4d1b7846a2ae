"""What every FFN module offers the rest of the code base: the forward contract and optional hooks.

A variant subclasses :class:`FFN` and overrides only the hooks it has something to say in;
diagnostics, inspection and the trainer call these hooks and never look inside a variant.
"""

from collections.abc import Callable
from contextlib import AbstractContextManager

import torch
from torch import nn

from core.variants import FFNSpec, hidden_size

# A split of a layer's forward for the pathway-interference probe: (forward that uses the given
# weights, weights the dense path uses, weights the sparse path uses, names of shared matrices).
PathSplit = tuple[Callable, dict[str, torch.Tensor], dict[str, torch.Tensor], list[str]]


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

    def knockouts(self) -> dict[str, Callable[[], AbstractContextManager]]:
        """Named contexts under which the layer runs a reduced model (e.g. one path only); the
        final evaluation reports the val loss under each, against the full model's ("mix")."""
        return {}


def linear(d_in: int, d_out: int) -> nn.Linear:
    """A bias-free projection, as every FFN matrix here."""
    return nn.Linear(d_in, d_out, bias=False)


__all__ = ["FFN", "PathSplit", "linear"]
