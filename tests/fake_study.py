"""A tiny study on disk for the Compare tests: two sizes x two lrs as four experiments (named the
way a study names them), swiglu and dual, seeds 0 and 1, plus one run still training."""

from pathlib import Path

from core.runs import Run

VOCAB = 100
# (hidden size, lr) -> variant -> final val loss per seed
LOSSES = {
    (8, 0.001): {"swiglu": [5.0, 5.2], "dual": [4.9, 5.3]},
    (8, 0.002): {"swiglu": [4.8, 4.6], "dual": [4.7, 4.4]},
    (16, 0.001): {"swiglu": [4.5, 4.1], "dual": [4.2, 4.0]},
    (16, 0.002): {"swiglu": [4.4, 4.0], "dual": [3.9, 3.9]},
}
PARAMS = {8: 1_000 + VOCAB * 8, 16: 3_000 + VOCAB * 16}  # total: 1,000 or 3,000 non-embedding


def experiment(hidden: int, lr: float) -> str:
    return f"fake-d{hidden}-lr{lr}"


def _config(variant: str, seed: int, hidden: int, lr: float) -> dict:
    options = {"ffn_threshold": "jumprelu"} if variant == "dual" else {}
    return {"variant": variant, "seed": seed, "preset": "micro",
            "model": {"ffn": variant, "hidden_size": hidden, "vocab_size": VOCAB, "tie_word_embeddings": True,
                      "ffn_options": options},
            "train": {"lr": lr, "steps": 20, "seed": seed}}


def write_fake_study(root: Path) -> list[str]:
    """Write the runs under `root`; return the experiment names."""
    for (hidden, lr), by_variant in LOSSES.items():
        for variant, losses in by_variant.items():
            for seed, loss in enumerate(losses):
                run = Run.at(root, experiment(hidden, lr), f"{variant}-s{seed}")
                run.write_config(_config(variant, seed, hidden, lr))
                run.append_metrics({"step": 10, "train/loss": loss + 1.0, "val/loss": loss + 0.5})
                run.append_metrics({"step": 20, "train/loss": loss + 0.1, "val/loss": loss})
                run.write_summary({"final_val_loss": loss, "params_total": PARAMS[hidden]})
                run.write_status("completed", step=20)
    training = Run.at(root, experiment(8, 0.001), "dual-s2")  # no final value yet: left out
    training.write_config(_config("dual", 2, 8, 0.001))
    training.append_metrics({"step": 10, "train/loss": 1.0, "val/loss": 1.0})
    training.write_status("running", step=10)
    return sorted({experiment(h, lr) for h, lr in LOSSES})
