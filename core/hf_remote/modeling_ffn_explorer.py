"""transformers model of an FFN-explorer run: Qwen2ForCausalLM with the run's FFN as every MLP.

Written into every non-SwiGLU export by ``core.export``, beside the explorer's own FFN source
files (copied, with their ``core.`` imports made relative), so the loaded model computes what the
explorer trained. ``ffn_variant.py`` names the variant's class. Load with
``AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True)``.
"""

import torch
from transformers import Qwen2ForCausalLM

from .configuration_ffn_explorer import FFNExplorerConfig
from .ffn_variant import VariantFFN


class FFNExplorerMLP(VariantFFN):
    """The variant as Qwen2's MLP: hidden states in, hidden states out.

    The variant's auxiliary loss (router z-loss, load balance) and statistics are training and
    inspection outputs of the explorer; transformers' forward has no place for them.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x)[0]


class FFNExplorerForCausalLM(Qwen2ForCausalLM):
    config_class = FFNExplorerConfig
    config: FFNExplorerConfig

    def __init__(self, config: FFNExplorerConfig):
        super().__init__(config)
        for layer in self.model.layers:
            layer.mlp = FFNExplorerMLP(config)
        self.post_init()
