"""core.inspection: per-token routing/sparsity/loss against a direct forward, truncation, cache."""

import json
import os
import threading
import time

import pytest
import torch
import torch.nn.functional as F

from core.analysis import inspection
from core.analysis.inspection import MODEL_CACHE_STATS, inspect_text, load_run_model
from core.config import apply_overrides, preset
from core.ffns.thresholds import KINDS as FFN_THRESHOLDS
from core.model import CausalLM, build_model, weights_state
from core.runs import Run
from core.training.data import load_tokenizer
from core.training.trainer import run_record

VARIANTS = [["model.ffn=swiglu"]] + [["model.ffn=dual", f"model.ffn_threshold={kind}"]
                                     for kind in FFN_THRESHOLDS]
TEXT = "The committee reported that the budget would be balanced by next year. " * 3


def _perturb(model: CausalLM) -> None:
    """Move the dual FFN off its init (router 1/2-1/2, theta 0.5) so stats differ per token/layer."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "router" in name:
                param.normal_(0.0, 0.5)
            elif name.endswith(("threshold", "alpha_dense", "alpha_sparse")):
                param.uniform_(0.2, 1.2)


def make_run(path, overrides: list[str], bf16: bool = False) -> tuple[Run, CausalLM]:
    """A micro run on disk (config, weights, tokenizer) without training; returns the fp32 model."""
    config = apply_overrides(preset("micro"), overrides)
    model = build_model(config.model)
    _perturb(model)
    weights = weights_state(model)
    if bf16:
        weights = {k: v.to(torch.bfloat16) for k, v in weights.items()}
        model.load_state_dict({k: v.float() for k, v in weights.items()}, strict=False)
    run = Run(path)
    run.write_config(run_record(config, "cpu"))
    run.save_checkpoint(weights, {"optimizer": {}}, step=1)
    _, tokenizer_path = load_tokenizer(config.data, config.model.vocab_size, progress=False)
    run.save_tokenizer(tokenizer_path)
    return run, model.eval()


@pytest.fixture(autouse=True)
def _fresh_cache():
    inspection.clear_model_cache()
    yield
    inspection.clear_model_cache()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One run per variant, made once for the module."""
    root = tmp_path_factory.mktemp("inspect-runs")
    return {i: make_run(root / "exp" / f"v{i}", overrides) for i, overrides in enumerate(VARIANTS)}


def _reference(model: CausalLM, ids: list[int]) -> tuple[torch.Tensor, dict]:
    """Per-token loss (position t-1 predicts t) and stats straight from the model."""
    with torch.no_grad():
        output = model(torch.tensor([ids]), return_stats=True)
    log_probs = F.log_softmax(output.logits[0].double(), dim=-1)
    losses = -log_probs[torch.arange(len(ids) - 1), torch.tensor(ids[1:])]
    return losses, output.stats


@pytest.mark.parametrize("index", range(len(VARIANTS)), ids=["swiglu", *FFN_THRESHOLDS])
def test_matches_direct_forward(runs, index):
    run, model = runs[index]
    result = inspect_text(run, TEXT)
    ids = load_run_model(run)[1].encode(TEXT, add_special_tokens=False).ids
    assert result.ids == ids and len(result.tokens) == len(ids) and "".join(result.tokens) == TEXT
    assert result.run == f"exp/v{index}" and not result.truncated and result.max_tokens == 128
    losses, stats = _reference(model, ids)
    assert result.token_loss[0] is None
    assert torch.allclose(torch.tensor(result.token_loss[1:], dtype=torch.float64), losses, atol=1e-4)
    assert result.mean_loss == pytest.approx(losses.mean().item(), abs=1e-4)
    if index == 0:
        assert result.variant == "swiglu" and stats == {}
        assert result.token_stats == {} and result.layer_stats == {} and result.stat_info == {}
        return
    assert result.variant.startswith("dual")
    layers = model.config.num_hidden_layers
    assert set(result.token_stats) == {"router_sparse", "zero_frac"}
    assert result.stat_info["router_sparse"]["per"] == "token"
    for name in ("router_sparse", "zero_frac"):
        got = torch.tensor(result.token_stats[name])
        assert got.shape == (layers, len(ids))
        assert torch.allclose(got, stats[name][:, 0], atol=1e-5)
    assert torch.tensor(result.token_stats["router_sparse"]).std() > 0.01  # perturbed router: not all 1/2
    for name in ("theta", "alpha_dense", "alpha_sparse"):
        assert torch.allclose(torch.tensor(result.layer_stats[name]), stats[name], atol=1e-6)
        assert len(result.layer_stats[name]) == layers


def test_truncates_to_context(runs):
    run, model = runs[1]
    long_text = TEXT * 20
    result = inspect_text(run, long_text)
    assert result.truncated and len(result.ids) == len(result.tokens) == result.max_tokens == 128
    assert long_text.startswith("".join(result.tokens))
    assert len(result.token_stats["router_sparse"][0]) == 128
    full = load_run_model(run)[1].encode(long_text, add_special_tokens=False).ids
    assert result.ids == full[:128]
    short = inspect_text(run, long_text, max_tokens=10)
    assert short.truncated and len(short.ids) == 10 and short.max_tokens == 10
    assert inspect_text(run, long_text, max_tokens=10_000).max_tokens == 128  # capped at the context
    with pytest.raises(ValueError, match="max_tokens"):
        inspect_text(run, TEXT, max_tokens=0)


@pytest.mark.parametrize("text", ["word " * 20_000, "a" * 100_000, " " * 99_999 + "x",
                                  "🙂\x00" * 50_000])
def test_huge_text_is_fast(runs, text):
    run, _ = runs[1]
    load_run_model(run)  # time the inspection, not the first load
    start = time.perf_counter()
    result = inspect_text(run, text)
    assert time.perf_counter() - start < 2.0
    assert result.truncated and len(result.ids) == 128 and text.startswith("".join(result.tokens))


def test_control_characters_and_emoji(runs):
    run, model = runs[1]
    text = "tab\there\x00nul\x07bell\r\n 🙂 café 日本語 \u200b<|endoftext|>\x1b[0m end"
    result = inspect_text(run, text)
    assert "".join(result.tokens) == text and not result.truncated
    zero_frac = result.token_stats["zero_frac"]
    assert len(result.tokens) == len(result.ids) == len(result.token_loss) == len(zero_frac[1])
    losses, _ = _reference(model, result.ids)
    assert torch.allclose(torch.tensor(result.token_loss[1:], dtype=torch.float64), losses, atol=1e-4)
    json.dumps(result.to_dict(), allow_nan=False)


@pytest.mark.parametrize("text", ["", "   ", "\n\t \r\n"])
def test_empty_text_is_an_error(runs, text):
    with pytest.raises(ValueError, match="enter some text to inspect"):
        inspect_text(runs[1][0], text)


def test_single_token_has_no_loss(runs):
    result = inspect_text(runs[1][0], "a")
    assert result.token_loss == [None] and result.mean_loss is None
    assert [len(row) for row in result.token_stats["router_sparse"]] == [1, 1]


def test_to_dict_is_json(runs):
    data = inspect_text(runs[0][0], TEXT).to_dict()
    assert set(data) >= {"run", "variant", "tokens", "ids", "token_loss", "token_stats", "layer_stats",
                         "stat_info", "truncated", "max_tokens", "mean_loss"}
    assert json.loads(json.dumps(data, allow_nan=False)) == data
    assert inspection._json_safe({"x": [float("nan"), 1.0]}) == {"x": [None, 1.0]}


def test_bf16_weights(tmp_path):
    run, model = make_run(tmp_path / "exp" / "bf16", VARIANTS[1], bf16=True)
    from safetensors import safe_open

    with safe_open(str(run.file("model.safetensors")), "pt") as f:
        assert f.get_tensor("model.embed_tokens.weight").dtype == torch.bfloat16
    loaded, _ = load_run_model(run)
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    result = inspect_text(run, TEXT)
    losses, stats = _reference(model, result.ids)  # model holds the bf16-rounded weights in fp32
    assert torch.allclose(torch.tensor(result.token_loss[1:], dtype=torch.float64), losses, atol=1e-4)
    assert torch.allclose(torch.tensor(result.token_stats["zero_frac"]), stats["zero_frac"][:, 0], atol=1e-5)


def test_cache_hits_and_reloads_newer_weights(tmp_path):
    run, model = make_run(tmp_path / "exp" / "cache", VARIANTS[1])
    loads = MODEL_CACHE_STATS["loads"]
    first = load_run_model(run)
    inspect_text(run, TEXT)
    assert load_run_model(run) is first and MODEL_CACHE_STATS["loads"] == loads + 1
    with torch.no_grad():
        model.model.layers[0].mlp.threshold.fill_(0.123)
    run.save_checkpoint(weights_state(model), {"optimizer": {}}, step=2)
    stat = run.file("model.safetensors").stat()  # a coarse clock must not hide the new file
    os.utime(run.file("model.safetensors"), ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    result = inspect_text(run, TEXT)
    assert MODEL_CACHE_STATS["loads"] == loads + 2
    assert result.layer_stats["theta"][0] == pytest.approx(0.123)
    assert len(inspection._CACHE) == 1  # the run's old version was dropped


def test_cache_is_lru_and_thread_safe(tmp_path, monkeypatch):
    run_a, _ = make_run(tmp_path / "exp" / "a", VARIANTS[0])
    run_b, _ = make_run(tmp_path / "exp" / "b", VARIANTS[1])
    loads = MODEL_CACHE_STATS["loads"]
    results = []
    threads = [threading.Thread(target=lambda: results.append(load_run_model(run_a))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert MODEL_CACHE_STATS["loads"] == loads + 1 and all(r is results[0] for r in results)
    monkeypatch.setattr(inspection, "CACHE_SIZE", 1)
    load_run_model(run_b)  # evicts a
    load_run_model(run_a)
    assert MODEL_CACHE_STATS["loads"] == loads + 3


def test_missing_parts_are_clear_errors(tmp_path):
    run, _ = make_run(tmp_path / "exp" / "parts", VARIANTS[1])
    for name, message in (("tokenizer.json", "no tokenizer"), ("model.safetensors", "no weights"),
                          ("config.json", "no config")):
        run.file(name).unlink()
        with pytest.raises(ValueError, match=message):
            inspect_text(run, TEXT)
    with pytest.raises(ValueError, match="no config"):
        load_run_model(Run(tmp_path / "exp" / "nothing"))


def test_weights_that_do_not_fit(tmp_path):
    run, _ = make_run(tmp_path / "exp" / "misfit", VARIANTS[0])
    config = run.read_config()
    config["model"]["ffn"] = "dual"  # swiglu weights lack the router and thresholds
    run.write_config(config)
    with pytest.raises(ValueError, match="do not fit"):
        inspect_text(run, TEXT)


@pytest.mark.parametrize("repeat", [2, 40])
def test_character_window_widens_for_long_tokens(runs, monkeypatch, repeat):
    run, _ = runs[1]
    monkeypatch.setattr(inspection, "CHARS_PER_TOKEN", 1)  # far too few characters at first
    text = TEXT * repeat
    full = load_run_model(run)[1].encode(text, add_special_tokens=False).ids
    result = inspect_text(run, text)
    assert result.ids == full[:128] and result.truncated == (len(full) > 128)
    assert text.startswith("".join(result.tokens))
