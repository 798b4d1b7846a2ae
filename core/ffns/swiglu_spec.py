"""The SwiGLU variant as data (torch-free): what config validation reads; the module is swiglu.py."""

from core.variants import FFNSpec

SPEC = FFNSpec(name="swiglu", summary="SwiGLU: down(silu(gate x) * up x), the Qwen2 MLP and the baseline")
