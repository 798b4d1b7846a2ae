"""GEGLU (Shazeer 2020): ``down(gelu(gate(x)) * up(x))``, the other common dense gated FFN."""

import torch
import torch.nn.functional as F

from core.ffns.swiglu import SwiGLU
from core.variants import FFNSpec, Option, register_ffn

SPEC = FFNSpec(
    name="geglu",
    summary="GEGLU: down(gelu(gate x) * up x), GELU-gated dense FFN (Shazeer 2020)",
    options=(Option("gelu_approximate", "none", "GELU form: exact (none) or the tanh approximation",
                    choices=("none", "tanh")),),
)


@register_ffn(SPEC)
class GeGLU(SwiGLU):
    """SwiGLU's projections with a GELU gate."""

    def __init__(self, config):
        super().__init__(config)
        self.approximate = config.ffn_options["gelu_approximate"]

    def gate(self, g: torch.Tensor) -> torch.Tensor:
        return F.gelu(g, approximate=self.approximate)
