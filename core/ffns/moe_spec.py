"""The mixture-of-experts variant as data (torch-free): what config validation reads; the module is moe.py."""

from core.variants import FFNSpec, Option, Stat


def _check(options: dict) -> None:
    if options["moe_top_k"] > options["moe_experts"]:
        raise ValueError(f"moe option moe_top_k ({options['moe_top_k']}) must be <= moe_experts "
                         f"({options['moe_experts']})")


SPEC = FFNSpec(
    name="moe",
    summary="mixture of SwiGLU experts: token-choice top-k routing, dropless (Switch / Mixtral)",
    options=(
        Option("moe_experts", 4, "number of experts", minimum=1),
        Option("moe_top_k", 1, "experts per token", minimum=1),
        Option("moe_renormalize", False, "renormalise the chosen experts' weights to sum to 1"),
        Option("router_balance_loss", 1e-2, "weight of the Switch load-balance loss", minimum=0),
        Option("router_z_loss", 1e-3, "weight of the router z-loss", minimum=0),
        # uniform or fixed weights would send every token to the same top-k experts: not offered
        Option("moe_router", "learned", "the router, or a control: a random map frozen at init",
               choices=("learned", "frozen_random")),
    ),
    stats=(
        Stat("top_expert", "index of the expert with the largest router weight", high=None),
        Stat("top_weight", "router weight of that expert"),
    ),
    matrices=lambda o: 3 * o["moe_experts"],
    active_matrices=lambda o: 3 * o["moe_top_k"],
    extra_params=lambda d, o: (d + 1) * o["moe_experts"],
    extra_flops=lambda d, o: 2 * d * o["moe_experts"],
    check=_check,
)
