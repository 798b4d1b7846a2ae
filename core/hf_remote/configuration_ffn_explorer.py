"""transformers config of an FFN-explorer model: Qwen2's, plus the FFN variant and its options.

Written into every non-SwiGLU export by ``core.export``; loaded with ``trust_remote_code=True``.
"""

from huggingface_hub.dataclasses import strict
from transformers import Qwen2Config


@strict
class FFNExplorerConfig(Qwen2Config):
    model_type = "ffn_explorer"

    ffn: str = "swiglu"  # the variant, a name in the explorer's FFN registry
    ffn_options: dict | None = None  # the variant's options, as in the run's config.json
    ffn_match: str = "width"  # how the FFN's hidden width is chosen against SwiGLU's intermediate_size
    ffn_hidden: int = 0  # explicit hidden width (0: from ffn_match)
