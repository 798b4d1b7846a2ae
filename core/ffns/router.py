"""A soft router over n choices (paths or experts), in fp32, with its auxiliary losses.

Besides the learned router, the controls that ask whether learning the routing matters
(routing by a fixed random map came within a few perplexity points of learned routing in MoE
studies): ``frozen_random`` (a random map drawn at init, never updated), ``uniform`` (1/n to
every choice) and ``fixed`` (the same given weights for every token). Controls add no aux loss:
nothing in them can be regularised.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

MODES = ("learned", "frozen_random", "uniform", "fixed")
# log(0) as a logit: softmax gives the fixed weights back to ~1e-13 and statistics stay finite
_LOG_ZERO = -30.0


class Router(nn.Module):
    """``softmax(W x + b) / temperature`` over `n` choices; the aux loss is the z-loss plus,
    when weighted, the Switch-Transformer load balance over each token's top-`k` choices.

    `mode` is one of :data:`MODES`; ``fixed`` takes `fixed_weights` (n values summing to 1). The
    projection exists in every mode, so checkpoints of all modes have the same tensors."""

    def __init__(self, d: int, n: int, temperature: float = 1.0, z_loss: float = 0.0,
                 balance: float = 0.0, k: int = 1, mode: str = "learned",
                 fixed_weights: tuple[float, ...] | None = None):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"router mode must be one of {', '.join(MODES)}, got {mode!r}")
        if mode == "fixed" and (fixed_weights is None or len(fixed_weights) != n):
            raise ValueError(f"a fixed router needs {n} weights, got {fixed_weights!r}")
        self.proj = nn.Linear(d, n)
        self.n, self.k, self.mode = n, k, mode
        self.fixed_weights = tuple(fixed_weights or ())
        self.temperature, self.z_loss_weight, self.balance_weight = temperature, z_loss, balance
        if mode != "learned":
            self.proj.requires_grad_(False)  # a control is never trained (nor weight-decayed)

    def reset_parameters(self) -> None:
        """The owner's init: zeros for a learned router (every token starts at 1/n); a random map
        with unit-variance logits for ``frozen_random`` (inputs are RMS-normed), so tokens really
        are routed apart."""
        nn.init.zeros_(self.proj.bias)
        if self.mode == "frozen_random":
            nn.init.normal_(self.proj.weight, std=self.proj.in_features ** -0.5)
        else:
            nn.init.zeros_(self.proj.weight)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """fp32 logits [..., n] after the temperature, whatever the autocast around (the log of
        the weights for ``uniform`` and ``fixed``)."""
        if self.mode in ("uniform", "fixed"):
            return self._constant_weights(x).log().clamp_min(_LOG_ZERO)
        with torch.autocast(device_type=x.device.type, enabled=False):
            logits = F.linear(x.float(), self.proj.weight.float(), self.proj.bias.float())
        return logits / self.temperature

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return weights [..., n] (fp32) and the router's auxiliary loss."""
        if self.mode in ("uniform", "fixed"):
            return self._constant_weights(x), x.new_zeros((), dtype=torch.float32)
        logits = self.logits(x)
        weights = logits.softmax(-1)
        if self.mode == "frozen_random":
            return weights, x.new_zeros((), dtype=torch.float32)
        return weights, self.aux_loss(logits, weights)

    def _constant_weights(self, x: torch.Tensor) -> torch.Tensor:
        values = self.fixed_weights if self.mode == "fixed" else (1.0 / self.n,) * self.n
        weights = torch.tensor(values, device=x.device, dtype=torch.float32)
        return weights.expand(*x.shape[:-1], self.n)

    def aux_loss(self, logits: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        loss = self.z_loss_weight * torch.logsumexp(logits, -1).pow(2).mean()
        if self.balance_weight:
            # n * sum_i (share of top-k slots given to i) * (mean weight of i): 1 when uniform
            flat = weights.reshape(-1, self.n)
            # k = 1 by argmax: ties (a zero-initialised router) go to the first choice, always
            chosen = flat.argmax(-1, keepdim=True) if self.k == 1 else flat.topk(self.k, -1).indices
            share = F.one_hot(chosen, self.n).float().sum(1).mean(0) / self.k
            loss = loss + self.balance_weight * self.n * (share * flat.mean(0)).sum()
        return loss


def entropy_bits(p: torch.Tensor) -> torch.Tensor:
    """Entropy of router weights over the last dim, in bits; 0 log 0 = 0."""
    return torch.special.entr(p).sum(-1) / math.log(2)
