import json
import math
import os
import subprocess
import sys
import uuid

import pytest
import torch
import torch.nn.functional as F

from core import variants
from core.config import ModelConfig, RunConfig, apply_overrides, parse_variant, preset, variant_label
from core.model import build_model
from tests.conftest import REPO, run_cli

NAMES = variants.names()  # the built-ins, fixed at collection (plugins registered below come later)
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "EXPLORER_NO_MALLOC_TUNING": "1"}


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k != variants.PLUGIN_ENV}
    return {**env, **OFFLINE, **extra}


def _config(*overrides: str) -> RunConfig:
    return apply_overrides(preset("micro"), list(overrides))


def _tiny(ffn: str = "swiglu", **options) -> ModelConfig:
    """A very small model shape (GQA included) with the variant's options."""
    return ModelConfig(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32,
                       ffn=ffn, ffn_options=options)


def _ffn(name: str, **options):
    """One FFN module of a tiny shape, outside any model (default PyTorch init)."""
    config = _tiny(name, **options)
    return variants.module_class(name)(config), config


# 1. every registered variant ------------------------------------------------------------------


@pytest.fixture(scope="module")
def listings():
    listed = run_cli("core.config", "--list", env=_env(), timeout=120)
    compared = run_cli("core.model", "--ffn", "all", env=_env(), timeout=120)
    assert listed.returncode == 0, listed.stderr
    assert compared.returncode == 0, compared.stderr
    return listed.stdout, compared.stdout


@pytest.mark.parametrize("name", NAMES)
def test_registry_walk(name, listings):
    config = _config(f"model.ffn={name}")
    variant = variants.spec(name)
    assert config.model.ffn == name and config.model.ffn_options == variant.defaults()
    for match in variants.FFN_MATCHES:
        model_config = apply_overrides(config, [f"model.ffn_match={match}"]).model
        model = build_model(model_config)
        for layer in model.model.layers:
            assert sum(p.numel() for p in layer.mlp.parameters()) == variants.parameter_count(model_config)

    model = build_model(config.model)
    L, B, T = config.model.num_hidden_layers, 2, 5
    with torch.no_grad():
        out = model(torch.randint(0, config.model.vocab_size, (B, T)), return_stats=True)
    assert out.logits.shape == (B, T, config.model.vocab_size)
    assert set(out.stats) == {s.name for s in variant.stats}
    for stat in variant.stats:
        value = out.stats[stat.name]
        assert value.shape == ((L, B, T) if stat.per == "token" else (L,)), stat.name
        assert torch.isfinite(value).all() and (value >= stat.low).all(), stat.name
        if stat.high is not None:
            assert (value <= stat.high).all(), stat.name

    assert RunConfig.from_dict(json.loads(config.to_json())) == config
    config_list, model_all = listings
    assert any(line.startswith(f"{name}: ") for line in config_list.splitlines())
    assert any(line.split()[:1] == [name] for line in model_all.splitlines())


def test_parameter_count_by_hand():
    d, h = 64, 256  # the micro preset
    assert variants.parameter_count(_config("model.ffn=swiglu").model) == 3 * d * h
    assert variants.parameter_count(_config("model.ffn=relu2").model) == 2 * d * h
    assert variants.parameter_count(_config("model.ffn=relu2", "model.ffn_match=params").model) == 2 * d * 384
    moe = _config("model.ffn=moe", "moe_experts=4", "moe_top_k=2", "model.ffn_match=active").model
    assert variants.hidden_size(moe) == 128
    assert variants.parameter_count(moe) == 4 * 3 * d * 128 + 4 * d + 4
    dual = _config("model.ffn=dual", "ffn_share=none", "model.ffn_match=params").model
    assert variants.parameter_count(dual) == 6 * d * 128 + 2 * d + 2 + 3


# 2. the config module stays torch-free ---------------------------------------------------------


TORCH_FREE = """
import sys
from core import variants
from core.config import apply_overrides, describe_variants, preset, variant_label
for name in variants.names():
    config = apply_overrides(preset("paper"), [f"model.ffn={name}", "model.ffn_match=params"])
    variant_label(config.model)
    variants.parameter_count(config.model), variants.flops_per_token(config.model)
describe_variants()
apply_overrides(preset("micro"), ["model.ffn=dual", "ffn_share=none", "ffn_threshold=cats"])
apply_overrides(preset("micro"), ["model.ffn=moe", "moe_experts=8", "moe_top_k=2"])
try:
    apply_overrides(preset("micro"), ["model.ffn=moe", "moe_top_k=9"])
except ValueError:
    pass
assert 'torch' not in sys.modules, 'torch imported'
"""


def test_building_and_validating_configs_needs_no_torch():
    """Every variant's config builds, validates, labels and counts without importing torch."""
    result = subprocess.run([sys.executable, "-c", TORCH_FREE], cwd=REPO, capture_output=True, text=True,
                            env=_env(), timeout=120)
    assert result.returncode == 0, result.stderr


# 3. mixture of experts -------------------------------------------------------------------------


def test_moe_one_expert_is_swiglu():
    torch.manual_seed(0)
    swiglu = build_model(_tiny()).eval()
    torch.manual_seed(0)
    moe = build_model(_tiny("moe", moe_experts=1, moe_top_k=1)).eval()
    state = moe.state_dict()
    copied = 0
    for key, value in swiglu.state_dict().items():
        new = key.replace(".mlp.", ".mlp.experts.0.")
        assert new in state, new
        state[new] = value.clone()
        copied += new != key
    assert copied == 3 * 2  # gate/up/down in both layers
    moe.load_state_dict(state)
    ids = torch.randint(0, 97, (2, 9))
    with torch.no_grad():
        a, b = swiglu(ids).logits, moe(ids).logits
    torch.testing.assert_close(b, a, rtol=0, atol=1e-6)


def _moe_reference(ffn, x: torch.Tensor, top_k: int, renormalize: bool) -> torch.Tensor:
    """Token by token: every expert's output, softmax router weights, the k largest, summed."""
    flat = x.reshape(-1, x.shape[-1])
    rows = []
    for token in flat:
        logits = token @ ffn.router.proj.weight.T + ffn.router.proj.bias
        p = torch.exp(logits - logits.max())
        p = p / p.sum()
        outs = [F.linear(F.silu(F.linear(token, e.gate_proj.weight)) * F.linear(token, e.up_proj.weight),
                         e.down_proj.weight) for e in ffn.experts]
        chosen = sorted(range(len(outs)), key=lambda i: -p[i].item())[:top_k]
        total = sum(p[i] for i in chosen) if renormalize else 1.0
        rows.append(sum(p[i] / total * outs[i] for i in chosen))
    return torch.stack(rows).view(x.shape)


@pytest.mark.parametrize("renormalize", [False, True])
def test_moe_top_k_dispatch_matches_dense_reference(renormalize):
    ffn, _ = _ffn("moe", moe_experts=4, moe_top_k=2, moe_renormalize=renormalize,
                  router_balance_loss=0.0, router_z_loss=0.0)
    x = torch.randn(2, 5, ffn.config.hidden_size)
    target = torch.randn_like(x)
    y, aux, stats = ffn(x, return_stats=True)
    assert aux.item() == 0
    expected = _moe_reference(ffn, x, 2, renormalize)
    torch.testing.assert_close(y, expected, rtol=1e-5, atol=1e-6)

    params = dict(ffn.named_parameters())
    grads = torch.autograd.grad((y * target).sum(), list(params.values()))
    reference = torch.autograd.grad((expected * target).sum(), list(params.values()))
    for (name, _), got, want in zip(params.items(), grads, reference):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6, msg=name)
    got = dict(zip(params, grads))
    assert got["router.proj.weight"].abs().sum() > 0  # the mix weights carry gradient to the router
    chosen = ffn.route(x.reshape(-1, x.shape[-1]))[3]
    for index in chosen.unique().tolist():
        assert got[f"experts.{index}.gate_proj.weight"].abs().sum() > 0
    # stats: the top expert and its (unnormalised) router weight
    weights = torch.softmax(F.linear(x, ffn.router.proj.weight, ffn.router.proj.bias), -1)
    torch.testing.assert_close(stats["top_weight"], weights.max(-1).values)
    assert torch.equal(stats["top_expert"], weights.argmax(-1).float())


def test_moe_aux_loss_by_hand():
    ffn, _ = _ffn("moe", moe_experts=4, moe_top_k=2, router_balance_loss=0.5, router_z_loss=0.1)
    x = torch.randn(3, 4, ffn.config.hidden_size)
    _, aux, _ = ffn(x)
    logits = F.linear(x.reshape(-1, x.shape[-1]), ffn.router.proj.weight, ffn.router.proj.bias)
    p = logits.softmax(-1)
    slots = torch.zeros(4)
    for row in p:
        for i in row.argsort(descending=True)[:2]:
            slots[i] += 1
    share = slots / slots.sum()
    balance = 4 * (share * p.mean(0)).sum()
    z = torch.logsumexp(logits, -1).pow(2).mean()
    torch.testing.assert_close(aux, 0.5 * balance + 0.1 * z)


# 4. dense variants by hand ---------------------------------------------------------------------


def test_relu2_by_hand():
    ffn, config = _ffn("relu2")
    x = torch.randn(3, 6, config.hidden_size)
    y, aux, stats = ffn(x, return_stats=True)
    hidden = F.relu(F.linear(x, ffn.up_proj.weight)) ** 2
    torch.testing.assert_close(y, F.linear(hidden, ffn.down_proj.weight))
    assert aux.item() == 0
    zero = torch.tensor([[sum(v == 0 for v in row.tolist()) / len(row) for row in seq] for seq in hidden])
    assert 0 < zero.mean() < 1
    torch.testing.assert_close(stats["zero_frac"], zero, rtol=0, atol=1e-7)


def _gelu(z: torch.Tensor, approximate: str) -> torch.Tensor:
    if approximate == "tanh":
        return 0.5 * z * (1 + torch.tanh(math.sqrt(2 / math.pi) * (z + 0.044715 * z ** 3)))
    return 0.5 * z * (1 + torch.erf(z / math.sqrt(2)))


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_geglu_by_hand(approximate):
    ffn, config = _ffn("geglu", gelu_approximate=approximate)
    x = 4 * torch.randn(3, 6, config.hidden_size)
    y, _, stats = ffn(x, return_stats=True)
    gate, up = F.linear(x, ffn.gate_proj.weight), F.linear(x, ffn.up_proj.weight)
    expected = F.linear(_gelu(gate, approximate) * up, ffn.down_proj.weight)
    torch.testing.assert_close(y, expected, rtol=1e-5, atol=1e-6)
    other = F.linear(_gelu(gate, "none" if approximate == "tanh" else "tanh") * up, ffn.down_proj.weight)
    assert (y - other).abs().max() > 1e-4  # the option changes the computation
    assert stats == {}


# 5. options --------------------------------------------------------------------------------------


@pytest.mark.parametrize("overrides, message", [
    (["model.ffn=dual", "ffn_share=some"], "must be one of all, updown, none"),
    (["model.ffn=dual", "ffn_threshold=relu"], "dual option ffn_threshold must be one of"),
    (["model.ffn=geglu", "gelu_approximate=fast"], "must be one of none, tanh"),
    (["model.ffn=moe", "moe_experts=abc"], "moe option moe_experts: expected int"),
    (["model.ffn=moe", "moe_experts=2.5"], "moe option moe_experts: expected int"),
    (["model.ffn=dual", "ffn_fused=1"], "dual option ffn_fused: expected bool"),
    (["model.ffn=dual", "threshold_init=fast"], "dual option threshold_init: expected float"),
    (["model.ffn=dual", "router_z_loss=NaN"], "expected a finite number"),
    (["model.ffn=moe", "moe_experts=0"], "moe option moe_experts must be >= 1"),
    (["model.ffn=moe", "router_z_loss=-0.1"], "moe option router_z_loss must be >= 0"),
    (["model.ffn=dual", "threshold_init=0"], "dual option threshold_init must be > 0"),
    (["model.ffn=moe", "moe_experts=2", "moe_top_k=3"], "moe_top_k (3) must be <= moe_experts (2)"),
    (["model.ffn=swiglu", "ffn_share=none"], "an option of dual, not of ffn=swiglu"),
    (["model.ffn=geglu", "model.moe_top_k=2"], "an option of moe, not of ffn=geglu"),
    (["model.ffn=nope"], "unknown ffn 'nope'"),
    (["model.ffn=nope", "moe_top_k=2"], "unknown ffn 'nope'"),
])
def test_bad_options(overrides, message):
    with pytest.raises(ValueError) as error:
        _config(*overrides)
    assert message in str(error.value)


def test_bad_options_in_model_config():
    with pytest.raises(ValueError, match="ffn=swiglu has no option ffn_share"):
        _tiny(ffn_share="none")
    with pytest.raises(ValueError, match="moe_top_k"):
        _tiny("moe", moe_experts=2, moe_top_k=4)
    with pytest.raises(ValueError, match="ffn_options must map"):
        ModelConfig(ffn_options=["moe_top_k"])


def test_switching_ffn_resets_options():
    dual = _config("model.ffn=dual", "ffn_share=none", "router_z_loss=0.05")
    assert dual.model.ffn_options["ffn_share"] == "none"
    moe = apply_overrides(dual, ["model.ffn=moe"])
    assert moe.model.ffn_options == variants.spec("moe").defaults()  # router_z_loss too: 1e-3
    back = apply_overrides(moe, ["ffn=dual"])
    assert back.model.ffn_options == variants.spec("dual").defaults()
    # ffn is applied first wherever it stands; naming the same ffn keeps its options
    assert _config("moe_top_k=2", "model.ffn=moe").model.ffn_options["moe_top_k"] == 2
    assert apply_overrides(dual, ["model.ffn=dual"]).model.ffn_options == dual.model.ffn_options
    assert apply_overrides(dual, ["model.ffn=swiglu"]).model.ffn_options == {}


@pytest.mark.parametrize("overrides, label", [
    ([], "dual"),
    (["ffn_fused=False"], "dual+ffn_fused=False"),
    (["ffn_share=none", "ffn_threshold=cats", "router_z_loss=0.01"], None),
    (["threshold_init=0.25", "router_temperature=2", "model.ffn_match=params"], None),
])
def test_label_round_trip_dual(overrides, label):
    config = _config("model.ffn=dual", *overrides)
    if label:
        assert variant_label(config.model) == label
    ffn, again = parse_variant(variant_label(config.model))
    assert ffn == "dual"
    assert _config(*again) == config


@pytest.mark.parametrize("overrides", [
    ["model.ffn=moe", "moe_experts=8", "moe_top_k=2", "moe_renormalize=True", "model.ffn_hidden=48"],
    ["model.ffn=geglu", "gelu_approximate=tanh"],
    ["model.ffn=relu2", "model.ffn_match=active"],
])
def test_label_round_trip_others(overrides):
    config = _config(*overrides)
    label = variant_label(config.model)
    assert label.startswith(config.model.ffn + "+")
    assert _config(*parse_variant(label)[1]) == config
    assert RunConfig.from_dict(json.loads(config.to_json())) == config


# 6. schema-1 config.json -----------------------------------------------------------------------

OLD_DUAL_OPTIONS = dict(ffn_share="none", ffn_threshold="cats", threshold_init=0.5,
                        threshold_bandwidth=0.2, router_z_loss=0.01, router_balance_loss=0.0,
                        router_temperature=1.5, ffn_fused=True)


def _schema_1(ffn: str) -> dict:
    model = dict(vocab_size=4096, hidden_size=64, intermediate_size=256, num_hidden_layers=2,
                 num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=128,
                 rope_theta=1000000.0, rms_norm_eps=1e-06, initializer_range=0.02,
                 tie_word_embeddings=True, ffn=ffn, ffn_hidden=0, ffn_match="width",
                 **OLD_DUAL_OPTIONS)
    return {"preset": "micro", "seed": 0, "device": "cpu", "model": model,
            "train": {"steps": 10, "seq_len": 64}, "data": {"source": "builtin"}}


def test_schema_1_dual():
    config = RunConfig.from_dict(_schema_1("dual"))
    assert config.model.ffn == "dual"
    added = {o.name: o.default for o in variants.spec("dual").options if o.name not in OLD_DUAL_OPTIONS}
    assert config.model.ffn_options == {**OLD_DUAL_OPTIONS, **added}  # options added since: defaults
    assert isinstance(config.model.ffn_options["router_temperature"], float)
    assert config.model.ffn_module == ""
    assert config.to_dict()["schema"] == 2
    assert RunConfig.from_dict(json.loads(config.to_json())) == config
    assert variant_label(config.model) == ("dual+ffn_share=none+ffn_threshold=cats+threshold_bandwidth=0.2"
                                           "+router_z_loss=0.01+router_temperature=1.5")


def test_schema_1_swiglu_drops_dual_fields():
    config = RunConfig.from_dict(_schema_1("swiglu"))
    assert config.model.ffn == "swiglu" and config.model.ffn_options == {}
    assert config.model == ModelConfig(**{k: v for k, v in _schema_1("swiglu")["model"].items()
                                          if k not in OLD_DUAL_OPTIONS})


def test_schema_2_rejects_flat_options():
    raw = _schema_1("dual")
    raw["schema"] = 2
    with pytest.raises(ValueError, match="unknown model config field"):
        RunConfig.from_dict(raw)


# 7. plugins --------------------------------------------------------------------------------------

TOY = '''
import torch

from core.ffns.base import FFN, linear
from core.variants import FFNSpec, Option, Stat, register_ffn


@register_ffn(FFNSpec(name="{name}", summary="toy: down(relu(up x) ** toy_power)",
                      options=(Option("toy_power", 1, "power of the activation", minimum=1),),
                      stats=(Stat("toy_active", "fraction of active units"),),
                      matrices=lambda options: 2))
class Toy(FFN):
    def __init__(self, config):
        super().__init__(config)
        self.power = config.ffn_options["toy_power"]
        self.up_proj = linear(config.hidden_size, self.hidden)
        self.down_proj = linear(self.hidden, config.hidden_size)

    def forward(self, x, return_stats=False):
        h = torch.relu(self.up_proj(x))
        stats = {{"toy_active": (h > 0).float().mean(-1)}} if return_stats else {{}}
        return self.down_proj(h ** self.power), x.new_zeros(()), stats
'''


def _toy(directory, name: str | None = None):
    name = name or f"toy_{uuid.uuid4().hex[:10]}"
    path = directory / f"{name}.py"
    path.write_text(TOY.format(name=name))
    return path, name


def test_plugin_loads_and_is_recorded(tmp_path):
    path, name = _toy(tmp_path)
    assert not str(path.resolve()).startswith(str(REPO))
    assert variants.load_plugin(path) == [name]
    assert variants.load_plugin(str(path)) == [name]  # a second load is a no-op
    assert name in variants.names()
    config = _config(f"model.ffn={name}", "toy_power=2")
    assert config.model.ffn_module == str(path.resolve())
    assert config.model.ffn_module_sha256 == variants.file_sha256(path)
    assert config.model.ffn_options == {"toy_power": 2}
    assert variant_label(config.model) == f"{name}+toy_power=2"
    assert RunConfig.from_dict(json.loads(config.to_json())) == config
    with pytest.raises(ValueError, match=f"{name} option toy_power must be >= 1"):
        _config(f"model.ffn={name}", "toy_power=0")
    assert apply_overrides(config, ["model.ffn=swiglu"]).model.ffn_module == ""

    model = build_model(config.model)
    layer_params = sum(p.numel() for p in model.model.layers[0].mlp.parameters())
    assert layer_params == variants.parameter_count(config.model)
    out = model(torch.randint(0, config.model.vocab_size, (2, 5)), return_stats=True)
    assert set(out.stats) == {"toy_active"} and out.stats["toy_active"].shape == (2, 2, 5)

    raw = json.loads(config.to_json())
    path.write_text(path.read_text() + "\n# edited\n")
    changed = variants.file_sha256(path)
    assert changed != config.model.ffn_module_sha256
    with pytest.raises(ValueError, match="changed"):
        variants.check_plugin_record(name, str(path), changed)
    raw["model"]["ffn_module_sha256"] = changed
    with pytest.raises(ValueError, match="the module changed"):
        RunConfig.from_dict(raw)


def test_plugin_not_loaded(tmp_path):
    raw = json.loads(preset("micro").to_json())
    raw["model"].update(ffn="never_loaded_ffn", ffn_module=str(tmp_path / "gone.py"),
                        ffn_module_sha256="0" * 64)
    with pytest.raises(ValueError, match="--ffn-module"):
        RunConfig.from_dict(raw)
    with pytest.raises(ValueError, match="--ffn-module"):
        variants.check_plugin_record("never_loaded_ffn", "x.py", "0" * 64)
    raw["model"].update(ffn_module="", ffn_module_sha256="")
    with pytest.raises(ValueError, match="unknown ffn 'never_loaded_ffn'.*--ffn-module"):
        RunConfig.from_dict(raw)


def test_plugin_bad_files(tmp_path):
    empty = tmp_path / "empty.py"
    empty.write_text("VALUE = 1\n")
    with pytest.raises(ValueError, match="registered no variant"):
        variants.load_plugin(empty)
    text = tmp_path / "toy.txt"
    text.write_text(TOY.format(name=f"toy_{uuid.uuid4().hex[:10]}"))
    with pytest.raises(ValueError, match="not a .py file"):
        variants.load_plugin(text)
    with pytest.raises(ValueError, match="not a .py file"):
        variants.load_plugin(tmp_path / "missing.py")
    broken = tmp_path / "broken.py"
    broken.write_text("raise RuntimeError('plugin exploded')\n")
    with pytest.raises(ValueError) as error:
        variants.load_plugin(broken)
    assert str(broken.resolve()) in str(error.value) and "plugin exploded" in str(error.value)


def test_plugin_duplicate_name(tmp_path):
    path, name = _toy(tmp_path)
    variants.load_plugin(path)
    other = tmp_path / "other"
    other.mkdir()
    with pytest.raises(ValueError, match="already registered"):
        variants.load_plugin(_toy(other, name)[0])
    assert variants.spec(name).source == str(path.resolve())
    with pytest.raises(ValueError, match="'swiglu' is a built-in FFN variant"):
        variants.load_plugin(_toy(other, "swiglu")[0])


def test_a_plugin_cannot_take_a_builtin_name_before_the_builtins_load(tmp_path):
    code = (f"from core import variants\nvariants.load_plugin({str(_toy(tmp_path, 'moe')[0])!r})")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                            env=_env(), timeout=120)
    assert "'moe' is a built-in FFN variant" in result.stderr


def test_plugin_registering_nothing_fails_every_time(tmp_path):
    empty = tmp_path / "empty.py"
    empty.write_text("VALUE = 1\n")
    for _ in range(2):
        with pytest.raises(ValueError, match="registered no variant"):
            variants.load_plugin(empty)


def test_plugin_failing_after_register_leaves_nothing(tmp_path):
    name = f"toy_{uuid.uuid4().hex[:10]}"
    path = tmp_path / "half.py"
    path.write_text(TOY.format(name=name) + "\nraise RuntimeError('late failure')\n")
    for _ in range(2):
        with pytest.raises(ValueError, match="late failure"):
            variants.load_plugin(path)
    assert name not in variants.names()


def test_plugin_trains_and_is_required_to_resume(tmp_path):
    path, name = _toy(tmp_path)
    run_dir = tmp_path / "run"
    env = _env(RUNS_DIR=str(tmp_path))
    result = run_cli("core.train", "--ffn-module", str(path), "--ffn", name, "--preset", "micro",
                     "--steps", "3", "--set", "train.eval_every=3", "--set", "train.checkpoint_every=3",
                     "--set", "data.max_bytes=100000", "--run-dir", str(run_dir), "--no-progress",
                     env=env, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert any("val/loss" in r and math.isfinite(r["val/loss"]) for r in records)
    stored = json.loads((run_dir / "config.json").read_text())
    assert stored["model"]["ffn"] == name
    assert stored["model"]["ffn_module"] == str(path.resolve())
    assert stored["model"]["ffn_module_sha256"] == variants.file_sha256(path)

    resumed = run_cli("core.train", "--run-dir", str(run_dir), "--resume", env=env, timeout=120)
    assert resumed.returncode == 2, resumed.stdout + resumed.stderr
    assert "--ffn-module" in resumed.stderr and name in resumed.stderr


def test_the_readme_example_is_the_shipped_file_and_trains(tmp_path):
    example = REPO / "examples" / "my_ffn.py"
    assert example.read_text().strip() in (REPO / "README.md").read_text()
    assert len(example.read_text().splitlines()) < 40
    name = variants.load_plugin(example)[0]
    config = apply_overrides(preset("micro"), [f"model.ffn={name}", "mix_init=0.25"]).model
    model = build_model(config)
    out = model(torch.randint(0, config.vocab_size, (2, 6)), torch.randint(0, config.vocab_size, (2, 6)),
                return_stats=True)
    out.loss.backward()
    assert model.model.layers[0].mlp.mix.grad is not None
    assert out.stats["gate_zero_frac"].shape == (config.num_hidden_layers, 2, 6)
    assert out.stats["mix"].tolist() == [0.25] * config.num_hidden_layers
