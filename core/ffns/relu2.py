"""Squared-ReLU FFN (Primer, So et al. 2021): ``down(relu(up(x))^2)``.

Sparse activations with no threshold and no router: the reference for how much sparsity a
plain activation gives. It has two d x h matrices, so matching SwiGLU's parameters (ffn_match
params) widens it to 1.5 h.
"""

import torch
import torch.nn.functional as F

from core.ffns.base import FFN, UnitActivity, linear, unit_sparsity
from core.ffns.relu2_spec import SPEC
from core.variants import register_ffn


@register_ffn(SPEC)
class SquaredReLU(FFN):
    def __init__(self, config):
        super().__init__(config)
        self.up_proj = linear(config.hidden_size, self.hidden)
        self.down_proj = linear(self.hidden, config.hidden_size)

    def forward(self, x: torch.Tensor, return_stats: bool = False):
        h = F.relu(self.up_proj(x)).square()
        stats = {"zero_frac": (h == 0).float().mean(-1).detach()} if return_stats else {}
        return self.down_proj(h), x.new_zeros(()), stats

    def probe_sums(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        active = (self.up_proj(x) > 0).reshape(-1, self.hidden).double()
        return {"tokens": torch.tensor(float(active.shape[0]), dtype=torch.float64),
                "zeros": (1 - active).sum(), "unit_active": active.sum(0)}

    def probe_metrics(self, sums: dict[str, torch.Tensor]) -> dict[str, float]:
        sparsity = unit_sparsity(sums["tokens"].item(), sums["zeros"].item(), sums["unit_active"])
        return {f"sparsity/{name}": value for name, value in sparsity.items()}

    def unit_activity(self, x: torch.Tensor) -> UnitActivity:
        """Each hidden unit's relu(up x)^2: non-negative, zero exactly where the unit is off."""
        return UnitActivity(F.relu(self.up_proj(x)).square())
