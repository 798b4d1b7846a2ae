"""Run configuration: model, training and data dataclasses, presets and `--set` overrides.

Every config is a plain dataclass that round-trips through JSON. Variants are chosen by
name (``ffn="dual"``) with their options in ``ffn_options``, both checked against the variant
registry (:mod:`core.variants`); nothing here holds code.
"""

import dataclasses
import json
import re
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from core import variants

SCHEMA_VERSION = 2  # of config.json; 1 (no "schema" key) kept each FFN option as a model field


def _field_names(kind: type) -> set[str]:
    return {f.name for f in dataclasses.fields(kind)}


def _positive(obj: Any, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        if value is None or value <= 0:
            raise ValueError(f"{name} must be > 0, got {value!r}")


def _one_of(obj: Any, name: str, allowed: tuple) -> None:
    value = getattr(obj, name)
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(str, allowed))}; got {value!r}")


@dataclass
class ModelConfig:
    """Shape of the Qwen2-style decoder and of its FFN variant (field names follow Qwen2Config)."""

    vocab_size: int = 4096  # embedding rows; tied with lm_head
    hidden_size: int = 64  # model width d
    intermediate_size: int = 256  # SwiGLU hidden width h (the reference width for dual too)
    num_hidden_layers: int = 2  # decoder layers
    num_attention_heads: int = 2  # query heads; must divide hidden_size
    num_key_value_heads: int = 1  # key/value heads (GQA); must divide num_attention_heads
    max_position_embeddings: int = 128  # longest sequence the model is used on
    rope_theta: float = 1_000_000.0  # rotary base, Qwen2 default
    rms_norm_eps: float = 1e-6  # RMSNorm epsilon, Qwen2 default
    initializer_range: float = 0.02  # std of the normal init of all matrices
    tie_word_embeddings: bool = True  # lm_head shares the embedding matrix
    ffn: str = variants.BASELINE  # FFN variant, a name in the registry (core.variants)
    ffn_hidden: int = 0  # hidden width of the FFN; 0 = derived from ffn_match
    # width: h = intermediate_size; params / active: h chosen so the FFN's total / per-token
    # parameters match SwiGLU's (they differ only for a mixture of experts)
    ffn_match: str = "width"
    ffn_options: dict = field(default_factory=dict)  # the variant's own options, defaults filled in
    ffn_module: str = ""  # a plugin variant's file (core.variants.load_plugin); "" = built in
    ffn_module_sha256: str = ""  # that file's sha256 when the run was configured
    loss_chunk_tokens: int = 0  # tokens per chunk of the training loss; 0 = auto (by vocab, device)

    def __post_init__(self) -> None:
        _positive(self, "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                  "num_attention_heads", "num_key_value_heads", "max_position_embeddings",
                  "rope_theta", "rms_norm_eps", "initializer_range")
        if self.loss_chunk_tokens < 0:
            raise ValueError(f"loss_chunk_tokens must be >= 0 (0 = auto), got {self.loss_chunk_tokens!r}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"num_attention_heads ({self.num_attention_heads}) must divide "
                             f"hidden_size ({self.hidden_size})")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(f"num_key_value_heads ({self.num_key_value_heads}) must divide "
                             f"num_attention_heads ({self.num_attention_heads})")
        if (self.hidden_size // self.num_attention_heads) % 2:
            raise ValueError("hidden_size / num_attention_heads (head dim) must be even for RoPE")
        if self.ffn_hidden < 0:
            raise ValueError(f"ffn_hidden must be >= 0 (0 = from ffn_match), got {self.ffn_hidden!r}")
        _one_of(self, "ffn_match", variants.FFN_MATCHES)
        if not isinstance(self.ffn_options, dict):
            raise ValueError(f"ffn_options must map option names to values, got {self.ffn_options!r:.60}")
        self._check_ffn()

    def _check_ffn(self) -> None:
        """Resolve the variant's options; a plugin variant must be the file the config names."""
        if self.ffn_module:
            variants.check_plugin_record(self.ffn, self.ffn_module, self.ffn_module_sha256)
        variant = variants.spec(self.ffn)
        self.ffn_options = variant.resolve(self.ffn_options)
        if variant.source and not self.ffn_module:
            self.ffn_module, self.ffn_module_sha256 = variant.source, variant.sha256

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads


@dataclass
class TrainConfig:
    """Optimisation and bookkeeping of one training run."""

    steps: int = 150  # optimizer steps
    batch_size: int = 16  # sequences per optimizer step (global, over all ranks)
    grad_accum: int = 1  # micro-batches per step (batch_size divisible by grad_accum x ranks); 0 = auto:
    # the largest micro-batch that fits the device's free memory (measured), same global batch
    memory_budget_gb: float = 0.0  # grad_accum=0 plans for at most this much memory (0 = a share of free)
    seq_len: int = 128  # tokens per sequence
    lr: float = 3e-3  # peak learning rate
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio
    warmup_steps: int = 10  # linear warmup steps
    weight_decay: float = 0.1  # AdamW decay, matrices only
    beta1: float = 0.9  # AdamW beta1
    beta2: float = 0.95  # AdamW beta2
    grad_clip: float = 1.0  # max global grad norm (0 = off)
    eval_every: int = 50  # steps between val evaluations (and at the end)
    eval_batches: int = 4  # val batches per evaluation (fixed set)
    log_every: int = 10  # steps between metrics lines
    checkpoint_every: int = 100  # steps between checkpoints (and at the end)
    seed: int = 0  # fixes init and data order
    device: str = "auto"  # auto / cpu / cuda / cuda:N
    dtype: str = "auto"  # auto / fp32 / bf16; auto = bf16 autocast on CUDA and on CPUs with
    # native bf16 products (AVX512-BF16, AMX, arm64 BF16), fp32 on other CPUs (they emulate bf16)
    compile: bool = False  # torch.compile the model (checked against eager gradients first)
    diagnostics: bool = True  # interference probe at evals and knock-out losses at the end (dual)

    def __post_init__(self) -> None:
        _positive(self, "steps", "batch_size", "seq_len", "lr", "eval_every",
                  "eval_batches", "log_every", "checkpoint_every")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio!r}")
        if self.warmup_steps < 0 or self.weight_decay < 0 or self.grad_clip < 0:
            raise ValueError("warmup_steps, weight_decay and grad_clip must be >= 0")
        if self.memory_budget_gb < 0:
            raise ValueError(f"memory_budget_gb must be >= 0 (0 = from free memory), "
                             f"got {self.memory_budget_gb!r}")
        if self.grad_accum < 0:
            raise ValueError(f"grad_accum must be >= 0 (0 = auto), got {self.grad_accum!r}")
        if self.grad_accum and self.batch_size % self.grad_accum:
            raise ValueError(f"grad_accum ({self.grad_accum}) must divide batch_size "
                             f"({self.batch_size})")
        _one_of(self, "dtype", ("auto", "fp32", "bf16"))
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1):
            raise ValueError(f"beta1 and beta2 must be in [0, 1), got {self.beta1}, {self.beta2}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", self.device):
            raise ValueError(f"device must be auto, cpu, cuda or cuda:N; got {self.device!r}")


@dataclass
class DataConfig:
    """Where the tokens come from and how they are tokenized."""

    source: str = "builtin"  # builtin / fineweb / hf:owner/name[:config] / a local path
    max_bytes: int = 0  # use only the first N bytes of text (0 = all)
    tokenizer: str = "bpe"  # bpe (trained on the corpus) or a Hub tokenizer name
    val_fraction: float = 0.05  # tail share of the token stream held out for validation
    text_column: str = "text"  # column holding the text in Hub / jsonl / parquet sources

    def __post_init__(self) -> None:
        if not self.source:
            raise ValueError("source must not be empty")
        if self.max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {self.max_bytes!r}")
        if not 0 < self.val_fraction < 0.5:
            raise ValueError(f"val_fraction must be in (0, 0.5), got {self.val_fraction!r}")


@dataclass
class RunConfig:
    """Everything one run needs: the three sections plus the preset it came from."""

    preset: str = "micro"  # preset the run started from
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)

    def __post_init__(self) -> None:
        if self.train.seq_len > self.model.max_position_embeddings:
            raise ValueError(f"seq_len ({self.train.seq_len}) exceeds max_position_embeddings "
                             f"({self.model.max_position_embeddings})")

    def to_dict(self) -> dict:
        return {"schema": SCHEMA_VERSION, **dataclasses.asdict(self)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, raw: dict) -> "RunConfig":
        """Rebuild (and validate) a config from :meth:`to_dict` output; unknown keys are errors."""
        sections = {}
        for name, kind in _SECTIONS.items():
            values = dict(raw.get(name, {}))
            if name == "model" and raw.get("schema", 1) < 2:
                values = _model_from_schema_1(values)
            unknown = sorted(set(values) - _field_names(kind))
            if unknown:
                raise ValueError(f"unknown {name} config field(s): {', '.join(unknown)}")
            sections[name] = kind(**values)
        return cls(preset=raw.get("preset", "custom"), **sections)


def _model_from_schema_1(values: dict) -> dict:
    """Schema 1 kept each (dual) FFN option as a model field: move the ones the variant declares
    into ffn_options; drop the rest (swiglu runs carried the dual defaults, unused)."""
    names = _field_names(ModelConfig)
    variant = variants.spec(values.get("ffn", ModelConfig.ffn))
    out = {k: v for k, v in values.items() if k in names}
    out["ffn_options"] = {k: v for k, v in values.items() if k not in names and variant.option(k)}
    return out


_PRESETS: dict[str, dict] = {
    # CI and smoke runs: trains in seconds on the first ~1 MB of the builtin corpus.
    "micro": dict(
        model=dict(vocab_size=4096, hidden_size=64, intermediate_size=256, num_hidden_layers=2,
                   num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=128),
        train=dict(steps=150, batch_size=16, seq_len=128, lr=3e-3, warmup_steps=10,
                   eval_every=50, checkpoint_every=50, log_every=10),
        data=dict(max_bytes=1_000_000),
    ),
    # Trains meaningfully on a 2-core CPU in minutes, on the whole builtin corpus.
    "tiny": dict(
        model=dict(vocab_size=8192, hidden_size=128, intermediate_size=512, num_hidden_layers=4,
                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256),
        train=dict(steps=300, batch_size=16, seq_len=256, lr=2e-3, warmup_steps=20,
                   eval_every=50, checkpoint_every=100, log_every=10),
    ),
    # One GPU.
    "small": dict(
        model=dict(vocab_size=32768, hidden_size=384, intermediate_size=1536, num_hidden_layers=8,
                   num_attention_heads=6, num_key_value_heads=2, max_position_embeddings=1024),
        train=dict(steps=2000, batch_size=64, grad_accum=0, seq_len=1024, lr=1e-3, warmup_steps=100,
                   eval_every=200, eval_batches=8, checkpoint_every=500, log_every=20),
    ),
    # The report's 84M Qwen: Qwen2 tokenizer (151,936 padded rows), batch 256 x 2048 on FineWeb.
    "paper": dict(
        model=dict(vocab_size=151_936, hidden_size=384, intermediate_size=1536,
                   num_hidden_layers=12, num_attention_heads=6, num_key_value_heads=2,
                   max_position_embeddings=2048),
        train=dict(steps=400, batch_size=256, grad_accum=0, seq_len=2048, lr=3e-4,
                   warmup_steps=40, eval_every=50, eval_batches=8, checkpoint_every=100,
                   log_every=10),
        # 400 steps x 256 x 2048 = 210M tokens, about 0.9 GB of FineWeb text: stream 1.2 GB.
        data=dict(source="fineweb", tokenizer="Qwen/Qwen2.5-0.5B", val_fraction=0.01,
                  max_bytes=1_200_000_000),
    ),
}

PRESETS = tuple(_PRESETS)


def preset(name: str) -> RunConfig:
    """Return a fresh :class:`RunConfig` for a named preset (micro, tiny, small, paper)."""
    if name not in _PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    spec = _PRESETS[name]
    return RunConfig(preset=name, model=ModelConfig(**spec.get("model", {})),
                     train=TrainConfig(**spec.get("train", {})),
                     data=DataConfig(**spec.get("data", {})))


def _parse_value(text: str) -> Any:
    if text in ("True", "False"):  # how a run label writes a bool option
        return text == "True"
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _coerce(key: str, value: Any, annotation: Any) -> Any:
    """Check `value` against a field annotation; ints are accepted where floats are expected."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        if value is None and type(None) in typing.get_args(annotation):
            return None
        annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
    return variants.coerce(value, annotation, f"--set {key}")


_SECTIONS = {"model": ModelConfig, "train": TrainConfig, "data": DataConfig}


def _locate(key: str, ffn: str) -> tuple[str, str]:
    """Resolve `field` or `section.field` to (section, field); an option of variant `ffn` to
    ("ffn_options", name); ambiguous bare names are errors."""
    section, dot, name = key.rpartition(".")
    if dot and section not in _SECTIONS and section != "ffn_options":
        raise ValueError(f"--set: unknown key {key!r}")
    if variants.spec(ffn).option(name) and section in ("", "model", "ffn_options"):
        return "ffn_options", name
    if section in _SECTIONS:
        if name not in _field_names(_SECTIONS[section]):
            raise ValueError(f"--set: unknown key {key!r}{_option_hint(name, ffn)}")
        return section, name
    owners = [s for s, kind in _SECTIONS.items() if name in _field_names(kind)]
    if not owners:
        raise ValueError(f"--set: unknown key {key!r}{_option_hint(name, ffn)}; "
                         "see `python -m core.config --list`")
    if len(owners) > 1:
        raise ValueError(f"--set: key {key!r} is ambiguous; write one of "
                         f"{', '.join(f'{o}.{key}' for o in owners)}")
    return owners[0], name


def _option_hint(name: str, ffn: str) -> str:
    """" (an option of dual, not of swiglu)" when `name` belongs to another variant."""
    owners = [v for v in variants.names() if variants.spec(v).option(name)]
    return f" (an option of {', '.join(owners)}, not of ffn={ffn})" if owners else ""


def _split(overrides: list[str] | None) -> list[tuple[str, str]]:
    pairs = []
    for item in overrides or []:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set expects key=value, got {item!r}")
        pairs.append((key.strip(), text))
    return pairs


def apply_overrides(config: RunConfig, overrides: list[str] | None) -> RunConfig:
    """Return a copy of `config` with `key=value` overrides applied, type-checked and validated.

    `ffn` is applied first, wherever it stands; a new variant starts from its option defaults.
    """
    changes: dict[str, dict[str, Any]] = {"model": {}, "train": {}, "data": {}, "ffn_options": {}}
    pairs = _split(overrides)
    ffn = config.model.ffn
    for key, text in pairs:
        if key in ("ffn", "model.ffn"):
            ffn = _coerce(key, _parse_value(text), str)
    options = dict(config.model.ffn_options)
    if ffn != config.model.ffn:
        options = {}
        changes["model"].update(ffn=ffn, ffn_module="", ffn_module_sha256="")
    for key, text in pairs:
        if key in ("ffn", "model.ffn"):
            continue
        section, name = _locate(key, ffn)
        if section == "ffn_options":
            changes[section][name] = variants.spec(ffn).option(name).check(_parse_value(text), ffn)
            continue
        hints = typing.get_type_hints(_SECTIONS[section])
        changes[section][name] = _coerce(key, _parse_value(text), hints[name])
    options.update(changes["model"].get("ffn_options", {}))  # a whole mapping, then single options
    changes["model"]["ffn_options"] = {**options, **changes["ffn_options"]}
    return RunConfig(preset=config.preset,
                     model=dataclasses.replace(config.model, **changes["model"]),
                     train=dataclasses.replace(config.train, **changes["train"]),
                     data=dataclasses.replace(config.data, **changes["data"]))


def override_keys() -> dict[str, str]:
    """Every `--set` key with its type: section fields, then each variant's options."""
    out = {}
    for section, kind in _SECTIONS.items():
        for f in dataclasses.fields(kind):
            out[f"{section}.{f.name}"] = f.type.__name__ if isinstance(f.type, type) else str(f.type)
    owners: dict[str, list[str]] = {}
    kinds: dict[str, str] = {}
    for name in variants.names():
        for option in variants.spec(name).options:
            owners.setdefault(option.name, []).append(name)
            kinds[option.name] = type(option.default).__name__
    for option, names in owners.items():
        out[f"model.{option}"] = f"{kinds[option]} (option of {', '.join(names)})"
    return out


_GENERIC_FFN_FIELDS = ("ffn_hidden", "ffn_match")  # FFN fields of ModelConfig that every variant has


def variant_label(model: ModelConfig) -> str:
    """Label a variant by `ffn` plus its non-default FFN options, e.g. ``dual+ffn_share=none``."""
    parts = [model.ffn]
    for name in _GENERIC_FFN_FIELDS:
        value = getattr(model, name)
        if value != getattr(ModelConfig, name):
            parts.append(f"{name}={value}")
    for option in variants.spec(model.ffn).options:
        value = model.ffn_options[option.name]
        if value != option.default:
            parts.append(f"{option.name}={value}")
    return "+".join(parts)


def parse_variant(label: str) -> tuple[str, list[str]]:
    """Split a variant label into its ffn name and `key=value` overrides (inverse of variant_label)."""
    ffn, *options = label.split("+")
    for option in options:
        if "=" not in option:
            raise ValueError(f"variant {label!r}: option {option!r} is not key=value")
    return ffn, [f"model.ffn={ffn}"] + [f"model.{o}" for o in options]


def describe_variants() -> str:
    """Every registered variant with its options, as `--list` prints it."""
    lines = []
    for name in variants.names():
        variant = variants.spec(name)
        lines.append(f"{name}: {variant.summary}" + (f"  [{variant.source}]" if variant.source else ""))
        for option in variant.options:
            allowed = f" ({' / '.join(map(str, option.choices))})" if option.choices else ""
            lines.append(f"    {option.name:24s} {option.default!s:10s} {option.help}{allowed}")
    return "\n".join(lines)


if __name__ == "__main__":
    import sys

    variants.load_plugins_from_env()
    if "--list" in sys.argv:
        for key, kind in override_keys().items():
            if "option of" not in kind:
                print(f"{key:32s} {kind}")
        print("\nFFN variants (--set model.ffn=NAME) and their options (--set NAME=VALUE):")
        print(describe_variants())
    else:
        print(preset(sys.argv[1] if len(sys.argv) > 1 else "micro").to_json())
