"""The one best-lr rule of every study.

A run competes only if it completed (a failed, cancelled or still running run never wins), its
summary does not mark it diverged, and its final val loss is a finite number. The lowest loss
wins; on a tie the smaller lr wins (a tie says nothing, and the smaller step is the safer one).
"""

import math


def usable_loss(record: dict) -> float | None:
    """The run's final val loss if the run may compete for a best lr, else None."""
    summary = record.get("summary") or {}
    loss = summary.get("final_val_loss")
    if record.get("status") != "completed" or summary.get("diverged"):
        return None
    if isinstance(loss, bool) or not isinstance(loss, (int, float)) or not math.isfinite(loss):
        return None
    return float(loss)


def best_lrs(records_by_lr: dict[float, list[dict]], seed: int | None = None) -> dict[str, float]:
    """{variant: its best lr} over runs grouped by lr (only `seed`'s when given); a variant with no
    usable run is absent. Variants appear in the order their first usable run is met, lrs ascending."""
    best: dict[str, tuple[float, float]] = {}  # variant: (loss, lr)
    for lr in sorted(records_by_lr):
        for record in records_by_lr[lr]:
            loss = usable_loss(record)
            if loss is None or (seed is not None and record.get("seed") != seed):
                continue
            variant = str(record["variant"])
            if variant not in best or (loss, lr) < best[variant]:
                best[variant] = (loss, lr)
    return {variant: lr for variant, (_, lr) in best.items()}
