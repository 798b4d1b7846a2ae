"""core.metrics: the one place metric keys are built and parsed."""

import json

import pytest

from core import metrics
from core.metrics import Key, layer_key, layer_keys, parse_key
from tests.conftest import REPO


@pytest.mark.parametrize("group, layer, name", [("routing", 0, "sparse_weight"), ("moe", 11, "load_e3"),
                                                 ("interference", 2, "cosine_gate")])
def test_layer_keys_round_trip(group, layer, name):
    key = layer_key(group, layer, name)
    assert key == f"{group}/L{layer}/{name}"
    assert parse_key(key) == Key(group, layer, name)


def test_layer_keys_of_a_probe():
    assert layer_keys(3, {"sparsity/zero_frac": 0.5, "alpha/dense": 1.0}) == {
        "sparsity/L3/zero_frac": 0.5, "alpha/L3/dense": 1.0}


@pytest.mark.parametrize("key, parsed", [
    ("val/loss", Key("val", None, "loss")),
    ("throughput/tok_s", Key("throughput", None, "tok_s")),
    ("threshold/L2", Key("threshold", 2, "theta")),  # schema-1 runs: bare key = theta
    ("routing/L1", Key("routing", 1, "value")),
    ("step", None), ("lr", None), ("Weird/L1/x", None),
])
def test_parse_key(key, parsed):
    assert parse_key(key) == parsed


def test_every_key_of_a_shipped_run_is_in_the_contract():
    """The shipped runs (demo, cpu-variants) parse completely."""
    flat = {metrics.STEP, metrics.TOKENS, metrics.ELAPSED, metrics.LR}
    known = {metrics.TRAIN_LOSS, metrics.AUX_LOSS, metrics.GRAD_NORM, metrics.TOK_S, metrics.PEAK_MEM,
             metrics.VAL_LOSS}
    for path in [REPO / "runs/cpu-variants-lr0.004/dual-s0", REPO / "runs/cpu-variants-lr0.004/moe-s0",
                 REPO / "runs/demo/dual-s0"]:
        for line in (path / "metrics.jsonl").read_text().splitlines():
            for key in json.loads(line):
                parsed = parse_key(key)
                assert key in flat or key in known or (parsed is not None and parsed.layer is not None), key
