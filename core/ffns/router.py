"""A learned soft router over n choices (paths or experts), in fp32, with its auxiliary losses."""

import math

import torch
import torch.nn.functional as F
from torch import nn


class Router(nn.Module):
    """``softmax(W x + b) / temperature`` over `n` choices; the aux loss is the z-loss plus,
    when weighted, the Switch-Transformer load balance over each token's top-`k` choices."""

    def __init__(self, d: int, n: int, temperature: float = 1.0, z_loss: float = 0.0,
                 balance: float = 0.0, k: int = 1):
        super().__init__()
        self.proj = nn.Linear(d, n)
        self.n, self.k = n, k
        self.temperature, self.z_loss_weight, self.balance_weight = temperature, z_loss, balance

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """fp32 logits [..., n] after the temperature, whatever the autocast around."""
        with torch.autocast(device_type=x.device.type, enabled=False):
            logits = F.linear(x.float(), self.proj.weight.float(), self.proj.bias.float())
        return logits / self.temperature

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return weights [..., n] (fp32) and the router's auxiliary loss."""
        logits = self.logits(x)
        weights = logits.softmax(-1)
        return weights, self.aux_loss(logits, weights)

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
