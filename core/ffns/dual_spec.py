"""The dual-path variant as data (torch-free): what config validation reads; the module is dual.py."""

from core.variants import FFNSpec, Option, Stat

SHARES = ("all", "updown", "none")  # projections the two paths share
THRESHOLD_KINDS = ("jumprelu", "shifted_relu", "cats")  # each implemented in core.ffns.thresholds
# the learned router and its controls (core.ffns.router.MODES, plus one path trained alone)
ROUTERS = ("learned", "frozen_random", "uniform", "fixed", "sparse_only", "dense_only")


def _check(options: dict) -> None:
    weight = options["router_fixed_weight"]
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"dual option router_fixed_weight must be in [0, 1], got {weight!r}")

SPEC = FFNSpec(
    name="dual",
    summary="the report's dual path: a 2-way router mixes a dense SwiGLU path and a learned-threshold "
            "sparse path",
    options=(
        Option("ffn_share", "all", "projections the two paths share", choices=SHARES),
        Option("ffn_threshold", "jumprelu", "sparse activation", choices=THRESHOLD_KINDS),
        Option("threshold_init", 0.5, "initial theta, in units of the gate's rms", minimum=0, exclusive=True),
        Option("threshold_bandwidth", 0.1, "width of theta's pseudo-gradient window (rms units)",
               minimum=0, exclusive=True),
        Option("router_z_loss", 1e-3, "weight of the router z-loss", minimum=0),
        Option("router_balance_loss", 0.0, "weight of the load-balance loss (0 = off)", minimum=0),
        Option("router_temperature", 1.0, "softmax temperature of the router", minimum=0, exclusive=True),
        Option("ffn_router", "learned", "the router, or a control: a frozen random map, 1/2 each, fixed "
               "weights, one path trained alone", choices=ROUTERS),
        Option("router_fixed_weight", 0.5, "sparse-path weight of every token with ffn_router=fixed",
               minimum=0),
        Option("ffn_fused", True, "recompute-in-backward fused activation (same maths, less memory)"),
    ),
    stats=(
        Stat("router_sparse", "router weight of the sparse path"),
        Stat("zero_frac", "fraction of exact zeros in the sparse path's activation"),
        Stat("theta", "learned threshold (rms units)", per="layer", high=2.0),
        Stat("alpha_dense", "dense-path scale", per="layer", high=2.0),
        Stat("alpha_sparse", "sparse-path scale", per="layer", high=2.0),
    ),
    matrices=lambda o: {"all": 3, "updown": 4, "none": 6}[o["ffn_share"]],
    extra_params=lambda d, o: 2 * d + 2 + 3,  # router weight and bias; theta, alpha_dense, alpha_sparse
    extra_flops=lambda d, o: 2 * d * 2,
    check=_check,
)
