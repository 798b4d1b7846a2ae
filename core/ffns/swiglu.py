"""SwiGLU (Shazeer 2020), as Qwen2MLP: ``down(silu(gate(x)) * up(x))``. The baseline."""

import torch
import torch.nn.functional as F

from core.ffns.base import FFN, linear
from core.ffns.swiglu_spec import SPEC
from core.variants import register_ffn


@register_ffn(SPEC)
class SwiGLU(FFN):
    def __init__(self, config):
        super().__init__(config)
        self.gate_proj = linear(config.hidden_size, self.hidden)
        self.up_proj = linear(config.hidden_size, self.hidden)
        self.down_proj = linear(self.hidden, config.hidden_size)

    def gate(self, g: torch.Tensor) -> torch.Tensor:
        """The gate's activation (gated FFNs built on this one change only it)."""
        return F.silu(g)

    def forward(self, x: torch.Tensor, return_stats: bool = False):
        y = self.down_proj(self.gate(self.gate_proj(x)) * self.up_proj(x))
        return y, x.new_zeros(()), {}
