"""A user's own FFN in one file: a gated FFN whose gate is a learned mix of SiLU and ReLU.

    python -m core.train --ffn-module examples/my_ffn.py --ffn mixgate --set mix_init=0.25
    EXPLORER_FFN_MODULES=examples/my_ffn.py python app.py
"""

import torch
import torch.nn.functional as F

from core.ffns.base import FFN, linear
from core.variants import FFNSpec, Option, Stat, register_ffn

SPEC = FFNSpec(
    name="mixgate",
    summary="down((m silu(g) + (1 - m) relu(g)) * up x) with a learned mix m per layer",
    options=(Option("mix_init", 0.5, "initial SiLU share m of the gate", minimum=0.0),),
    stats=(Stat("gate_zero_frac", "fraction of hidden units whose gate is exactly 0"),
           Stat("mix", "learned SiLU share m", per="layer")),
)


@register_ffn(SPEC)
class MixGate(FFN):
    def __init__(self, config):
        super().__init__(config)
        d, h = config.hidden_size, self.hidden
        self.gate_proj, self.up_proj, self.down_proj = linear(d, h), linear(d, h), linear(h, d)
        self.mix = torch.nn.Parameter(torch.tensor(config.ffn_options["mix_init"]))

    def forward(self, x, return_stats=False):
        g = self.gate_proj(x)
        gate = self.mix * F.silu(g) + (1 - self.mix) * F.relu(g)
        stats = {}
        if return_stats:
            stats = {"gate_zero_frac": (gate == 0).float().mean(-1), "mix": self.mix.detach()}
        return self.down_proj(gate * self.up_proj(x)), x.new_zeros(()), stats
