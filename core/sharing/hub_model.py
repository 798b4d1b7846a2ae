"""Share one trained run as a Hugging Face model repo that transformers loads.

    python -m core.hub push-model EXPERIMENT/RUN --repo owner/name [--private] [--dtype bfloat16]
                                  [--dataset-repo owner/name] [--dry-run]

The run is exported with :mod:`core.export` (plain Qwen2 for SwiGLU, remote code for every other
variant) and uploaded with a model card: architecture and FFN options, parameter counts, training
data and tokens, the run's final val loss with its experiment's seed statistics (Table 1), the
command that trains it again, and a link to the experiment's dataset repo when it was pushed or
pulled with ``core.hub``. Offline, it stops at once with one message and changes nothing locally.
"""

import json
import tempfile
from pathlib import Path

from huggingface_hub import HfApi

from core import variants
from core.analysis.stats import TABLE1_NOTE, table1
from core.config import RunConfig
from core.runs import Run, experiment_records, hub_dataset_repo, runs_root
from core.sharing import hub_common
from core.sharing.hub_common import (
    CARD,
    HubError,
    hub_failure,
    markdown_table,
    sweep_commands,
    validate_repo_id,
)


def resolve_run(spec: str, runs_dir: str | Path | None = None) -> Run:
    """The run named by `spec`: ``EXPERIMENT/RUN`` under the runs root, or a run folder's path."""
    parts = spec.strip("/").split("/")
    if len(parts) == 2 and not Path(spec).is_absolute():
        candidate = Run.at(runs_root(runs_dir), *parts)
        if candidate.exists():
            return candidate
    run = Run(spec)
    if not run.exists():
        raise HubError(f"no run {spec!r}: give EXPERIMENT/RUN under {runs_root(runs_dir)} or a run "
                       "folder with config.json")
    return run


def _run_record(run: Run) -> dict:
    """The experiment records of `run`'s experiment, and the one of `run` itself."""
    records = experiment_records(run.path.parent.parent, run.experiment)
    return next(r for r in records if r["name"] == run.name), records


def _front_matter(config: dict, dataset_repo: str | None) -> list[str]:
    lines = ["---", "library_name: transformers", "pipeline_tag: text-generation", "tags:",
             "- ffn-explorer", "- transformer-ffn", f"- ffn-{config['model']['ffn']}"]
    if dataset_repo:
        lines += ["datasets:", f"- {dataset_repo}"]
    return lines + ["---"]


def _architecture(config: RunConfig) -> list[str]:
    model = config.model
    spec = variants.spec(model.ffn)
    options = [f"| `{name}` | `{json.dumps(value)}` |" for name, value in model.ffn_options.items()]
    table = ["| option | value |", "|:--|:--|", *options] if options else ["The variant has no options."]
    return [
        f"Qwen2-style decoder: hidden {model.hidden_size}, {model.num_hidden_layers} layers, "
        f"{model.num_attention_heads} query / {model.num_key_value_heads} key-value heads, vocab "
        f"{model.vocab_size}, tied embeddings: {str(model.tie_word_embeddings).lower()}.", "",
        f"FFN `{model.ffn}`: {spec.summary}. Hidden width {variants.hidden_size(model)} "
        f"(`ffn_match={model.ffn_match}` against SwiGLU's {model.intermediate_size}); "
        f"{variants.parameter_count(model):,} parameters per layer.", "", *table,
    ]


def _parameters(config: RunConfig) -> list[str]:
    from core.model import config_parameter_counts  # torch: only when a card is written

    counts = config_parameter_counts(config.model)
    return [f"- {name.replace('_', '-')}: {value:,} ({value / 1e6:.2f}M)" for name, value in counts.items()]


def _training(record: dict, config: RunConfig) -> list[str]:
    tokens = next((m["tokens"] for m in reversed(record["metrics"]) if m.get("tokens")), None)
    train, data = config.train, config.data
    return [
        f"- Data: `{data.source}`, tokenizer `{data.tokenizer}`",
        f"- Tokens seen: {tokens:,}" if tokens else "- Tokens seen: unknown",
        f"- Steps: {train.steps}, batch {train.batch_size} x {train.seq_len} tokens, peak lr "
        f"{train.lr:g}, seed {train.seed}",
        f"- Preset `{config.preset}`, trained on {record['config'].get('device', '?')} with torch "
        f"{record['config'].get('versions', {}).get('torch', '?')}",
    ]


def _results(record: dict, records: list[dict], experiment: str) -> list[str]:
    loss = record["summary"].get("final_val_loss")
    table = table1(records)
    row = table[table["variant"] == record["variant"]]
    lines = [f"Final validation loss of this run: {loss:.4f}." if isinstance(loss, (int, float))
             else "This run has no final validation loss."]
    if len(row) and row.iloc[0]["seeds"] >= 2:
        lines[0] += (f" Its variant over {row.iloc[0]['seeds']} seeds of experiment `{experiment}`: "
                     f"{row.iloc[0]['val_loss']} (mean ± sample std).")
    return lines + ["", "The experiment's Table 1. " + TABLE1_NOTE, "", markdown_table(table)]


def _usage(repo: str, config: RunConfig, record: dict, dataset_repo: str | None,
           experiment: str) -> list[str]:
    remote = ", trust_remote_code=True" if config.model.ffn != variants.BASELINE else ""
    commands = sweep_commands(experiment, [record["config"]])
    retrain = ["```bash", *commands, "python -m core.train --config explorer_config.json  # the same run",
               "```"]
    source = ([f"The whole experiment (every seed and variant, metrics included) is the dataset repo "
               f"[{dataset_repo}](https://huggingface.co/datasets/{dataset_repo})."] if dataset_repo else [])
    return [
        "```python", "from transformers import AutoModelForCausalLM, AutoTokenizer", "",
        f'model = AutoModelForCausalLM.from_pretrained("{repo}"{remote})',
        f'tokenizer = AutoTokenizer.from_pretrained("{repo}")',
        'ids = tokenizer("The feed-forward network", return_tensors="pt").input_ids',
        "print(tokenizer.decode(model.generate(ids, max_new_tokens=20)[0]))", "```", "",
        "## Reproduce", "", "Train it again with the FFN explorer:", "", *retrain, "", *source,
    ]


def model_card(run: Run, repo: str, dataset_repo: str | None = None) -> str:
    """The README.md of the model repo of `run`."""
    record, records = _run_record(run)
    config = RunConfig.from_dict(record["config"])
    dataset_repo = dataset_repo or hub_dataset_repo(run.path.parent.parent, run.experiment)
    remote = ("" if config.model.ffn == variants.BASELINE else
              " The FFN is not one transformers ships: the repo carries its code (`trust_remote_code=True`).")
    return "\n".join([
        *_front_matter(record["config"], dataset_repo), "", f"# {repo.split('/')[1]}", "",
        f"A Qwen2-style causal language model with the `{record['variant']}` feed-forward network, "
        f"trained with the FFN explorer (run `{run.experiment}/{run.name}`).{remote}", "",
        "## Architecture", "", *_architecture(config), "",
        "## Parameters", "", *_parameters(config), "",
        "## Training", "", *_training(record, config), "",
        "## Results", "", *_results(record, records, run.experiment), "",
        "## Use", "", *_usage(repo, config, record, dataset_repo, run.experiment), "",
    ])


def stage_model(run: Run, dest: Path, repo: str, dtype: str = "float32",
                dataset_repo: str | None = None) -> list[str]:
    """Put what push-model uploads into the empty folder `dest`; return the staged files, sorted."""
    from core.sharing.export import export_run  # torch and the model: only when a model is pushed

    if run.is_alive():
        raise HubError(f"run {run.experiment}/{run.name} is still training; wait or cancel it")
    if not run.file("model.safetensors").is_file():
        raise HubError(f"run {run.experiment}/{run.name} has no weights (model.safetensors) to push")
    card = model_card(run, validate_repo_id(repo), dataset_repo)
    export_run(run.path, dest, dtype)
    (dest / CARD).write_text(card)
    (dest / "explorer_config.json").write_text(run.file("config.json").read_text())
    return sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file())


def push_model(spec: str, repo: str, private: bool = False, dtype: str = "float32",
               dataset_repo: str | None = None, runs_dir: str | Path | None = None) -> str:
    """Export run `spec` and upload it to the Hub model repo `repo`; return the repo's URL."""
    repo = validate_repo_id(repo)
    run = resolve_run(spec, runs_dir)  # local problems first, before the network
    hub_common.require_hub(f"pushing run {spec!r} to {repo}")
    api = HfApi(token=hub_common.require_token())
    with tempfile.TemporaryDirectory(prefix="explorer-push-model-") as tmp:
        files = stage_model(run, Path(tmp), repo, dtype, dataset_repo)
        try:
            url = api.create_repo(repo, private=True if private else None, exist_ok=True)
            api.upload_folder(repo_id=repo, folder_path=tmp,
                              commit_message=f"core.hub push-model: {run.experiment}/{run.name} "
                                             f"({len(files)} files)")
        except Exception as error:  # HTTP and transport errors of several libraries
            raise hub_failure(f"pushing to {repo}", repo, error) from None
    return str(url or f"https://huggingface.co/{repo}")
