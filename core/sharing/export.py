"""Export a model or a run to a folder that transformers loads with ``AutoModelForCausalLM``.

    python -m core.export RUN_FOLDER OUT_FOLDER [--dtype bfloat16]

SwiGLU is transformers' own ``Qwen2ForCausalLM``: config.json and model.safetensors suffice.
Every other variant (a plugin's too) is exported with remote code: a thin Qwen2 subclass
(``core/hf_remote``) whose MLP is the variant's module, next to the variant's own source file and
the explorer files it imports, copied with ``from core.X import`` made ``from .X import``. So a
change to an FFN changes its next export, and the folder loads with
``from_pretrained(folder, trust_remote_code=True)`` wherever torch and transformers are installed.
The folder also carries the run's tokenizer and a generation config. transformers is not needed
to export, only to load.
"""

import argparse
import ast
import copy
import json
import shutil
import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer

from core import variants
from core.config import ModelConfig
from core.model import CausalLM, weights_state

ROOT = Path(__file__).resolve().parents[2]  # the folder that holds the `core` package
REMOTE_TEMPLATES = ROOT / "core" / "hf_remote"
REMOTE_CONFIG, REMOTE_MODEL = "configuration_ffn_explorer", "modeling_ffn_explorer"
VARIANT_FILE = "ffn_variant.py"  # written per export: names the variant's class for the template
DTYPES = ("float32", "bfloat16", "float16")


def qwen2_config_dict(config: ModelConfig, dtype: str = "float32") -> dict:
    """The transformers ``Qwen2Config`` fields for a SwiGLU `config`."""
    rope = {"rope_type": "default", "rope_theta": config.rope_theta}
    return {
        "architectures": ["Qwen2ForCausalLM"],
        "model_type": "qwen2",
        "vocab_size": config.vocab_size,
        "hidden_size": config.hidden_size,
        "intermediate_size": variants.hidden_size(config),
        "num_hidden_layers": config.num_hidden_layers,
        "num_attention_heads": config.num_attention_heads,
        "num_key_value_heads": config.num_key_value_heads,
        "hidden_act": "silu",
        "max_position_embeddings": config.max_position_embeddings,
        "initializer_range": config.initializer_range,
        "rms_norm_eps": config.rms_norm_eps,
        "rope_parameters": rope,
        "rope_theta": config.rope_theta,  # read by transformers releases before rope_parameters
        "tie_word_embeddings": config.tie_word_embeddings,
        "use_sliding_window": False,
        "attention_dropout": 0.0,
        "use_cache": True,
        "torch_dtype": dtype,
    }


def remote_config_dict(config: ModelConfig, dtype: str = "float32") -> dict:
    """config.json of a remote-code export: Qwen2's fields plus the variant and its options."""
    out = qwen2_config_dict(config, dtype)
    out.update({
        "architectures": ["FFNExplorerForCausalLM"],
        "model_type": "ffn_explorer",
        "auto_map": {"AutoConfig": f"{REMOTE_CONFIG}.FFNExplorerConfig",
                     "AutoModelForCausalLM": f"{REMOTE_MODEL}.FFNExplorerForCausalLM"},
        # SwiGLU's width: the variant derives its own from it, as in the explorer
        "intermediate_size": config.intermediate_size,
        "ffn": config.ffn,
        "ffn_options": dict(config.ffn_options),
        "ffn_match": config.ffn_match,
        "ffn_hidden": config.ffn_hidden,
    })
    return out


# ---------------------------------------------------------------------------- remote code


def _export_name(path: Path) -> str:
    """File name of a source file in the flat export folder."""
    if path.is_relative_to(ROOT / "core"):
        return path.name
    return f"plugin_{path.name}"  # a user's file never shadows an explorer module


def _core_module_file(module: str, where: Path) -> Path:
    """The .py file of an imported ``core.…`` module; ValueError for a package or unknown name."""
    path = ROOT.joinpath(*module.split(".")).with_suffix(".py")
    if not path.is_file():
        raise ValueError(f"{where}: `from {module} import …` cannot be exported; import names from a "
                         "module file (e.g. `from core.ffns.base import FFN`)")
    return path


def _relative_source(path: Path) -> tuple[str, list[Path]]:
    """`path`'s source with each ``from core.X.Y import`` made ``from .Y import``, and the core
    files it imports."""
    source = path.read_text()
    lines = source.splitlines(keepends=True)
    imported = []
    for node in ast.walk(ast.parse(source, str(path))):
        if isinstance(node, ast.Import) and any(a.name.split(".")[0] == "core" for a in node.names):
            raise ValueError(f"{path}:{node.lineno}: `import core…` cannot be exported; write "
                             "`from core.<module> import <names>`")
        if not (isinstance(node, ast.ImportFrom) and node.level == 0 and node.module
                and node.module.split(".")[0] == "core"):
            continue
        target = _core_module_file(node.module, path)
        line = lines[node.lineno - 1]
        old, new = f"from {node.module} import", f"from .{_export_name(target)[:-3]} import"
        if old not in line:
            raise ValueError(f"{path}:{node.lineno}: write the import on one line as `{old} …`")
        lines[node.lineno - 1] = line.replace(old, new, 1)
        imported.append(target)
    return "".join(lines), imported


def ffn_source_files(ffn: str) -> dict[str, str]:
    """{file name: source} of variant `ffn`: its module, every explorer module it imports
    (transitively, imports made relative) and ``ffn_variant.py`` naming its class."""
    cls = variants.module_class(ffn)
    start = Path(sys.modules[cls.__module__].__file__).resolve()
    files: dict[str, str] = {}
    origins: dict[str, Path] = {}
    pending = [start]
    while pending:
        path = pending.pop()
        name = _export_name(path)
        if name in origins:
            if origins[name] != path:
                raise ValueError(f"{path} and {origins[name]} would both be exported as {name}")
            continue
        origins[name] = path
        files[name], imported = _relative_source(path)
        pending += imported
    files[VARIANT_FILE] = (f'"""The FFN variant of this export, {ffn!r} (written by core.export)."""\n\n'
                           f"from .{_export_name(start)[:-3]} import {cls.__name__} as VariantFFN\n\n"
                           '__all__ = ["VariantFFN"]\n')
    return files


def remote_code_files(ffn: str) -> dict[str, str]:
    """Every code file of a remote-code export of variant `ffn`."""
    files = ffn_source_files(ffn)
    for name in (REMOTE_CONFIG, REMOTE_MODEL):
        files[f"{name}.py"] = (REMOTE_TEMPLATES / f"{name}.py").read_text()
    return files


# ---------------------------------------------------------------------------- tokenizer


def tokenizer_files(tokenizer_path: str | Path) -> dict[str, str]:
    """tokenizer.json plus the tokenizer and generation configs transformers reads beside it."""
    from core.training.data import eot_id  # the data module is only needed to name the end-of-text token

    text = Path(tokenizer_path).read_text()
    tokenizer = Tokenizer.from_str(text)
    eot = eot_id(tokenizer)
    eot_token = tokenizer.id_to_token(eot)
    tokenizer_config = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": eot_token,
                        "eos_token": eot_token, "pad_token": eot_token, "unk_token": None,
                        "add_bos_token": False, "add_eos_token": False,
                        "model_max_length": 1_000_000, "clean_up_tokenization_spaces": False}
    generation = {"bos_token_id": eot, "eos_token_id": eot, "pad_token_id": eot, "do_sample": False}
    return {"tokenizer.json": text,
            "tokenizer_config.json": json.dumps(tokenizer_config, indent=2) + "\n",
            "generation_config.json": json.dumps(generation, indent=2) + "\n"}


# ---------------------------------------------------------------------------- export


def export_files(config: ModelConfig, dtype: str, tokenizer_path: str | Path | None) -> dict[str, str]:
    """Every text file of the export of a `config` model (all but the weights)."""
    if config.ffn == variants.BASELINE:
        files = {"config.json": qwen2_config_dict(config, dtype)}
    else:
        files = {"config.json": remote_config_dict(config, dtype), **remote_code_files(config.ffn)}
    files["config.json"] = json.dumps(files["config.json"], indent=2) + "\n"
    if tokenizer_path is not None:
        files.update(tokenizer_files(tokenizer_path))
    return files


def export_transformers(model: CausalLM, out_dir: str | Path,
                        tokenizer_path: str | Path | None = None) -> Path:
    """Write `model` (any registered variant) as a transformers folder at `out_dir`, atomically;
    return the folder. ValueError for an existing non-empty `out_dir` or source that cannot be
    exported; nothing is left behind on failure."""
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"export folder {out} exists and is not empty")
    dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
    files = export_files(model.config, dtype, tokenizer_path)  # may refuse: before any write
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        for name, text in files.items():
            (staging / name).write_text(text)
        save_file(weights_state(model), str(staging / "model.safetensors"), metadata={"format": "pt"})
        if out.exists():
            out.rmdir()
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


def export_run(run_dir: str | Path, out_dir: str | Path, dtype: str = "float32") -> Path:
    """Export a run folder's latest weights and tokenizer (see :func:`export_transformers`)."""
    from core.analysis.inspection import load_run_model  # loads and checks config, weights, tokenizer
    from core.runs import Run

    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    run = Run(run_dir)
    if not run.exists():
        raise ValueError(f"{run.path} is not a run folder (no config.json)")
    model, _ = load_run_model(run)  # shared with the model cache: convert a copy
    model = copy.deepcopy(model).to(getattr(torch, dtype))
    return export_transformers(model, out_dir, run.file("tokenizer.json"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m core.export", description=__doc__.split("\n")[0])
    p.add_argument("run", help="a run folder (with config.json, model.safetensors, tokenizer.json)")
    p.add_argument("out", help="the export folder to create (must not exist or be empty)")
    p.add_argument("--dtype", default="float32", choices=DTYPES, help="weights' dtype in the export")
    p.add_argument("--ffn-module", action="append", default=[], metavar="PATH",
                   help="the FFN file of a plugin run (repeatable)")
    args = p.parse_args(argv)
    try:
        for path in args.ffn_module:
            variants.load_plugin(path)
        folder = export_run(args.run, args.out, args.dtype)
    except (ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    hint = ", trust_remote_code=True" if (folder / VARIANT_FILE).exists() else ""
    print(f"exported {args.run} to {folder}; load it with "
          f"AutoModelForCausalLM.from_pretrained({str(folder)!r}{hint})")
    return 0
