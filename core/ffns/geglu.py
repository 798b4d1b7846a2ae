"""GEGLU (Shazeer 2020): ``down(gelu(gate(x)) * up(x))``, the other common dense gated FFN."""

import torch
import torch.nn.functional as F

from core.ffns.geglu_spec import SPEC
from core.ffns.swiglu import SwiGLU
from core.variants import register_ffn


@register_ffn(SPEC)
class GeGLU(SwiGLU):
    """SwiGLU's projections with a GELU gate."""

    def __init__(self, config):
        super().__init__(config)
        self.approximate = config.ffn_options["gelu_approximate"]

    def gate(self, g: torch.Tensor) -> torch.Tensor:
        return F.gelu(g, approximate=self.approximate)
