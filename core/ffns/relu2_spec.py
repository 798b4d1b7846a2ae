"""The squared-ReLU variant as data (torch-free): what config validation reads; the module is relu2.py."""

from core.variants import FFNSpec, Stat

SPEC = FFNSpec(
    name="relu2",
    summary="squared ReLU: down(relu(up x)^2), activation-sparse, no gate (Primer)",
    matrices=lambda options: 2,
    stats=(Stat("zero_frac", "fraction of exact zeros in relu(up x)^2 per token"),),
)
