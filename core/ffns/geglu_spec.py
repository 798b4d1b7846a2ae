"""The GEGLU variant as data (torch-free): what config validation reads; the module is geglu.py."""

from core.variants import FFNSpec, Option

SPEC = FFNSpec(
    name="geglu",
    summary="GEGLU: down(gelu(gate x) * up x), GELU-gated dense FFN (Shazeer 2020)",
    options=(Option("gelu_approximate", "none", "GELU form: exact (none) or the tanh approximation",
                    choices=("none", "tanh")),),
)
