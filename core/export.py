"""Export a SwiGLU model to a folder that transformers loads as ``Qwen2ForCausalLM``.

Only the checkpoint format is written here (config.json + model.safetensors); transformers
itself is not needed to export, only to load.
"""

import json
import shutil
import tempfile
from pathlib import Path

from safetensors.torch import save_file

from core import variants
from core.config import ModelConfig
from core.model import CausalLM, weights_state


def qwen2_config_dict(config: ModelConfig, dtype: str = "float32") -> dict:
    """The transformers ``Qwen2Config`` fields for a SwiGLU `config`."""
    rope = {"rope_type": "default", "rope_theta": config.rope_theta}
    return {
        "architectures": ["Qwen2ForCausalLM"],
        "model_type": "qwen2",
        "vocab_size": config.vocab_size,
        "hidden_size": config.hidden_size,
        "intermediate_size": variants.hidden_size(config),
        "num_hidden_layers": config.num_hidden_layers,
        "num_attention_heads": config.num_attention_heads,
        "num_key_value_heads": config.num_key_value_heads,
        "hidden_act": "silu",
        "max_position_embeddings": config.max_position_embeddings,
        "initializer_range": config.initializer_range,
        "rms_norm_eps": config.rms_norm_eps,
        "rope_parameters": rope,
        "rope_theta": config.rope_theta,  # read by transformers releases before rope_parameters
        "tie_word_embeddings": config.tie_word_embeddings,
        "use_sliding_window": False,
        "attention_dropout": 0.0,
        "use_cache": True,
        "torch_dtype": dtype,
    }


def export_transformers(model: CausalLM, out_dir: str | Path,
                        tokenizer_path: str | Path | None = None) -> Path:
    """Write `model` as a transformers Qwen2 folder at `out_dir` (atomically); return the folder.

    Raises ValueError for FFN variants transformers cannot represent (dual) and for an
    existing non-empty `out_dir`.
    """
    if model.config.ffn != variants.BASELINE:
        raise ValueError(f"cannot export ffn={model.config.ffn!r}: transformers' Qwen2 has only a "
                         "SwiGLU MLP; export a swiglu run, or share the dual run's own run folder")
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"export folder {out} exists and is not empty")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
        (staging / "config.json").write_text(json.dumps(qwen2_config_dict(model.config, dtype), indent=2))
        save_file(weights_state(model), str(staging / "model.safetensors"), metadata={"format": "pt"})
        if tokenizer_path is not None:
            shutil.copyfile(tokenizer_path, staging / "tokenizer.json")
        if out.exists():
            out.rmdir()
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out
