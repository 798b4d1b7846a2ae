"""The metrics contract: every key of a ``metrics.jsonl`` line is built and parsed here.

A line is one JSON object per logged step. Flat keys: ``step``, ``tokens``, ``elapsed_s``,
``lr``, ``train/loss``, ``train/aux_loss``, ``train/grad_norm``, ``throughput/tok_s``,
``mem/peak_gb`` (every log step) and ``val/loss`` (evaluations). Per-layer diagnostics are
``<group>/L<i>/<name>`` (layers 0-based), e.g. ``routing/L0/sparse_weight``; their groups and
names come from the variants' probes and core.diagnostics. Runs written before schema 2 also
hold ``<group>/L<i>`` keys without a name (``threshold/L<i>`` was theta): :func:`parse_key`
reads them as the group's :data:`BARE_LAYER_NAMES` entry.
"""

import re
from typing import NamedTuple

STEP, TOKENS, ELAPSED, LR = "step", "tokens", "elapsed_s", "lr"
TRAIN_LOSS, AUX_LOSS, GRAD_NORM = "train/loss", "train/aux_loss", "train/grad_norm"
TOK_S, PEAK_MEM = "throughput/tok_s", "mem/peak_gb"
VAL_LOSS = "val/loss"
LOSSES = (VAL_LOSS, TRAIN_LOSS)  # the curves shown first
# what an old bare per-layer key <group>/L<i> measured
BARE_LAYER_NAMES = {"threshold": "theta"}

_KEY = re.compile(r"^(?P<group>[a-z_]+)/(?:L(?P<layer>\d+)(?:/(?P<name>.+))?|(?P<flat>.+))$")


class Key(NamedTuple):
    """A parsed metric key: its group, layer (None for a flat key) and name."""

    group: str
    layer: int | None
    name: str


def layer_key(group: str, layer: int, name: str) -> str:
    """The key of metric `name` of `group` at layer `layer`: ``group/L{layer}/name``."""
    return f"{group}/L{layer}/{name}"


def layer_keys(layer: int, grouped: dict[str, float]) -> dict[str, float]:
    """``{"group/name": v}`` of one layer as ``{"group/L{layer}/name": v}``."""
    out = {}
    for key, value in grouped.items():
        group, name = key.split("/", 1)
        out[layer_key(group, layer, name)] = value
    return out


def parse_key(key: str) -> Key | None:
    """`key` as (group, layer, name); None for keys without a group (``step``, ``lr``, ...)."""
    match = _KEY.match(key)
    if match is None:
        return None
    if match["layer"] is None:
        return Key(match["group"], None, match["flat"])
    name = match["name"] or BARE_LAYER_NAMES.get(match["group"], "value")
    return Key(match["group"], int(match["layer"]), name)


__all__ = ["STEP", "TOKENS", "ELAPSED", "LR", "TRAIN_LOSS", "AUX_LOSS", "GRAD_NORM", "TOK_S",
           "PEAK_MEM", "VAL_LOSS", "LOSSES", "BARE_LAYER_NAMES", "Key", "layer_key", "layer_keys",
           "parse_key"]
