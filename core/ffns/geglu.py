"""GEGLU (Shazeer 2020): ``down(gelu(gate(x)) * up(x))``, the other common dense gated FFN."""

import torch
import torch.nn.functional as F

from core.ffns.base import FFN, linear
from core.variants import FFNSpec, Option, register_ffn

SPEC = FFNSpec(
    name="geglu",
    summary="GEGLU: down(gelu(gate x) * up x), GELU-gated dense FFN (Shazeer 2020)",
    options=(Option("gelu_approximate", "none", "GELU form: exact (none) or the tanh approximation",
                    choices=("none", "tanh")),),
)


@register_ffn(SPEC)
class GeGLU(FFN):
    def __init__(self, config):
        super().__init__(config)
        self.approximate = config.ffn_options["gelu_approximate"]
        self.gate_proj = linear(config.hidden_size, self.hidden)
        self.up_proj = linear(config.hidden_size, self.hidden)
        self.down_proj = linear(self.hidden, config.hidden_size)

    def forward(self, x: torch.Tensor, return_stats: bool = False):
        gate = F.gelu(self.gate_proj(x), approximate=self.approximate)
        return self.down_proj(gate * self.up_proj(x)), x.new_zeros(()), {}
