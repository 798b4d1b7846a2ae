"""Share experiments through the Hugging Face Hub, as dataset repos.

    python -m core.hub push EXPERIMENT --repo owner/name [--private] [--with-optimizer] [--dry-run]
    python -m core.hub pull owner/name [--experiment E] [--force]
    python -m core.hub push-model EXPERIMENT/RUN --repo owner/name [--dry-run]  (core.sharing.hub_model)

A push uploads, per run, ``config.json``, ``metrics.jsonl``, ``status.json``, ``summary.json``,
``tokenizer.json`` and the final ``model.safetensors`` (never ``train.log`` or ``run.lock``; the
checkpoint's optimizer state only with ``--with-optimizer``), plus a generated dataset card
(``README.md``: Table 1, setup, how to reproduce) and ``explorer.json`` (format and run list).
The repo then mirrors the experiment: files of runs deleted locally are deleted there too.

A pull downloads into a hidden folder of the runs root, validates every file (known names only,
valid run names, configs that ``RunConfig.from_dict`` accepts, no links), then renames it into
place: an experiment appears whole or not at all, and an existing one is only replaced with
``--force``. Without network (or with ``HF_HUB_OFFLINE=1``) both fail at once with one message.
"""

import argparse
import json
import logging
import os
import shlex
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path, PurePosixPath

from huggingface_hub import HfApi, snapshot_download

from core.analysis.stats import TABLE1_NOTE, table1
from core.config import RunConfig
from core.metrics import VAL_LOSS
from core.runs import (
    Run,
    RunLockedError,
    experiment_records,
    list_runs,
    record_hub_dataset_repo,
    runs_root,
    staged_experiment,
    validate_name,
)

# HubError, validate_repo_id, markdown_table and sweep_commands stay importable from here. The Hub
# checks are called as hub_common.require_hub / require_token: one place to replace them (tests).
from core.sharing import hub_common
from core.sharing.hub_common import (
    CARD,
    HubError,
    hub_failure,
    markdown_table,
    sweep_commands,
    validate_repo_id,
)

logger = logging.getLogger(__name__)

RUN_FILES = ("config.json", "metrics.jsonl", "status.json", "summary.json", "tokenizer.json",
             "model.safetensors")
# Optimizer/RNG state for resuming; trainer_state.pt is only ever loaded with weights_only=True.
CHECKPOINT_FILES = ("model.safetensors", "trainer_state.pt")
MANIFEST = "explorer.json"
FORMAT = 1
_DOWNLOAD = ".hub-download"


# ---------------------------------------------------------------------------- push


def shareable_runs(root: str | Path | None, experiment: str) -> list[Run]:
    """The runs of `experiment` that can be pushed; HubError if none, or if one is training."""
    validate_name(experiment, "experiment name")
    runs = list_runs(root, experiment)
    if not runs:
        raise HubError(f"no runs in experiment {experiment!r} under {runs_root(root)}")
    busy = [run.name for run in runs if run.is_alive()]
    if busy:
        raise HubError(f"runs still training in {experiment!r}: {', '.join(busy)}; wait or cancel them")
    return runs


def _link_or_copy(source: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, dest)  # free snapshot: run files are replaced by rename, never edited in place
    except OSError:
        shutil.copy2(source, dest)


def stage_experiment(root: str | Path | None, experiment: str, dest: Path, repo: str,
                     with_optimizer: bool = False) -> list[str]:
    """Put what a push uploads into the empty folder `dest`; return the staged paths, sorted.

    Per run the files of RUN_FILES that exist (never train.log, run.lock or checkpoints), with
    `with_optimizer` also the newest checkpoint as ``checkpoint/``; then the card and manifest.
    """
    runs = shareable_runs(root, experiment)
    for run in runs:
        for name in RUN_FILES:
            if run.file(name).is_file():
                _link_or_copy(run.file(name), dest / run.name / name)
        folder = run.checkpoint_dir() if with_optimizer else None
        for name in CHECKPOINT_FILES if folder else ():
            _link_or_copy(folder / name, dest / run.name / "checkpoint" / name)
    records = experiment_records(root, experiment)
    (dest / CARD).write_text(dataset_card(experiment, repo, records, with_optimizer))
    manifest = {"format": FORMAT, "experiment": experiment, "runs": [r.name for r in runs],
                "with_optimizer": with_optimizer}
    (dest / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file())


def push(experiment: str, repo: str, private: bool = False, with_optimizer: bool = False,
         runs_dir: str | Path | None = None) -> str:
    """Upload `experiment` to the Hub dataset repo `repo` (created if missing); return its URL."""
    repo = validate_repo_id(repo)
    shareable_runs(runs_dir, experiment)  # fail on local problems before touching the network
    hub_common.require_hub(f"pushing experiment {experiment!r} to {repo}")
    token = hub_common.require_token()
    api = HfApi(token=token)
    with tempfile.TemporaryDirectory(prefix="explorer-push-") as tmp:
        files = stage_experiment(runs_dir, experiment, Path(tmp), repo, with_optimizer)
        try:
            url = api.create_repo(repo, repo_type="dataset", private=True if private else None,
                                  exist_ok=True)
            # delete_patterns: the repo mirrors the experiment (the Hub always keeps .gitattributes).
            api.upload_folder(repo_id=repo, repo_type="dataset", folder_path=tmp, delete_patterns=["*"],
                              commit_message=f"core.hub push: experiment {experiment} ({len(files)} files)")
        except Exception as error:  # HTTP and transport errors of several libraries
            raise hub_failure(f"pushing to {repo}", repo, error) from None
    record_hub_dataset_repo(runs_root(runs_dir) / experiment, repo)
    return str(url or f"https://huggingface.co/datasets/{repo}")


# ---------------------------------------------------------------------------- pull


def pull_patterns() -> list[str]:
    """allow_patterns for snapshot_download: only files a push writes are ever downloaded."""
    names = set(RUN_FILES) | {f"checkpoint/{n}" for n in CHECKPOINT_FILES}
    return [CARD, MANIFEST, *sorted(f"*/{n}" for n in names)]


def _walk_files(folder: Path) -> list[PurePosixPath]:
    """Every regular file under `folder` (relative); links and special files are refused."""
    files = []
    for top, dirs, names in os.walk(folder):
        here = Path(top)
        if here == folder and ".cache" in dirs:
            dirs.remove(".cache")  # huggingface_hub's own download metadata in local_dir
        for name in dirs + names:
            path = here / name
            rel = PurePosixPath(path.relative_to(folder).as_posix())
            if path.is_symlink():
                raise HubError(f"{rel}: links are not allowed in an experiment")
            if name in names:
                if not path.is_file():
                    raise HubError(f"{rel}: not a regular file")
                files.append(rel)
    return sorted(files)


def _allowed(rel: PurePosixPath) -> bool:
    parts = rel.parts
    if len(parts) == 1:
        return parts[0] in (CARD, MANIFEST)
    try:
        validate_name(parts[0], "run name")
    except ValueError:
        return False
    if len(parts) == 2:
        return parts[1] in RUN_FILES
    return len(parts) == 3 and parts[1] == "checkpoint" and parts[2] in CHECKPOINT_FILES


def _read_object(path: Path, rel: PurePosixPath) -> dict:
    try:
        value = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise HubError(f"{rel} is not valid JSON: {error}") from None
    if not isinstance(value, dict):
        raise HubError(f"{rel} should hold a JSON object")
    return value


def validate_snapshot(folder: Path, repo: str = "the repo") -> list[PurePosixPath]:
    """Check a downloaded experiment and return its files; HubError on anything unexpected.

    Only known file names at known places, run folders with valid names each holding a config
    that RunConfig.from_dict accepts, JSON files that parse, nothing outside `folder`.
    """
    files = _walk_files(folder)
    base = folder.resolve()
    for rel in files:
        if not _allowed(rel) or not (folder / rel).resolve().is_relative_to(base):
            raise HubError(f"{repo} holds a file core.hub does not pull: {str(rel)[:200]!r}")
        if rel.name.endswith(".json") and rel.name != "tokenizer.json":
            _read_object(folder / rel, rel)
    runs = sorted({rel.parts[0] for rel in files if len(rel.parts) > 1})
    if not runs:
        raise HubError(f"{repo} holds no runs: is it an experiment pushed with core.hub?")
    for name in runs:
        rel = PurePosixPath(name, "config.json")
        if rel not in files:
            raise HubError(f"{repo}: run {name} has no config.json")
        try:
            RunConfig.from_dict(_read_object(folder / rel, rel))
        except (ValueError, TypeError) as error:
            raise HubError(f"{repo}: {rel} is not a valid run config: {error}") from None
    if PurePosixPath(MANIFEST) in files:
        listed = _read_object(folder / MANIFEST, PurePosixPath(MANIFEST)).get("runs") or []
        missing = sorted(set(map(str, listed)) - set(runs))
        if missing:
            raise HubError(f"{repo}: runs listed in {MANIFEST} were not downloaded: {', '.join(missing)}")
    return files


def default_experiment(repo: str) -> str:
    """The local experiment name a pull of `repo` uses by default: the repo's name."""
    return validate_name(validate_repo_id(repo).split("/", 1)[1], "experiment name")


def _experiment_exists(root: str | Path | None, experiment: str) -> bool:
    return (runs_root(root) / experiment).exists()


def pull(repo: str, experiment: str | None = None, force: bool = False,
         runs_dir: str | Path | None = None, revision: str | None = None) -> Path:
    """Download the experiment in dataset repo `repo` into ``<runs root>/<experiment>``.

    `experiment` defaults to the repo's name. An existing experiment is refused unless `force`
    (then replaced whole). Nothing is written locally unless the whole download validates.
    """
    repo = validate_repo_id(repo)
    experiment = validate_name(experiment, "experiment name") if experiment else default_experiment(repo)
    if not force and _experiment_exists(runs_dir, experiment):
        raise HubError(f"experiment {experiment!r} already exists in {runs_root(runs_dir)}; pass --force "
                       "to replace it or --experiment NAME to pull under another name")
    hub_common.require_hub(f"pulling {repo}")
    try:
        with staged_experiment(runs_dir, experiment, replace=force) as staging:
            download = staging / _DOWNLOAD
            try:
                snapshot_download(repo, repo_type="dataset", revision=revision, local_dir=download,
                                  allow_patterns=pull_patterns())
            except Exception as error:  # HTTP and transport errors of several libraries
                raise hub_failure(f"pulling {repo}", repo, error) from None
            for rel in validate_snapshot(download, repo):
                (staging / rel).parent.mkdir(parents=True, exist_ok=True)
                os.replace(download / rel, staging / rel)
            shutil.rmtree(download)
            record_hub_dataset_repo(staging, repo)
    except FileExistsError as error:  # appeared while downloading
        raise HubError(f"{error}; nothing was changed (pass --force to replace it)") from None
    except RunLockedError as error:
        raise HubError(f"{error}; nothing was changed") from None
    return runs_root(runs_dir) / experiment


def pull_at_start(runs_dir: str | Path | None = None, env: dict | None = None) -> str | None:
    """App start-up: pull ``$EXPLORER_HUB_EXPERIMENT`` (owner/name) unless it is already there.

    Returns the experiment name, or None when nothing is configured or the pull failed (logged as
    a warning: the app starts anyway). A local copy is never replaced: runs launched into it on a
    persistent disk would be lost.
    """
    env = os.environ if env is None else env
    repo = (env.get("EXPLORER_HUB_EXPERIMENT") or "").strip()
    if not repo:
        return None
    try:
        experiment = default_experiment(repo)
        if _experiment_exists(runs_dir, experiment):
            logger.info("EXPLORER_HUB_EXPERIMENT: %s is already in the runs folder; not pulled again",
                        experiment)
        else:
            pull(repo, experiment, runs_dir=runs_dir)
            logger.info("EXPLORER_HUB_EXPERIMENT: pulled %s as experiment %s", repo, experiment)
        return experiment
    except Exception as error:  # whatever went wrong, the app must still start
        logger.warning("EXPLORER_HUB_EXPERIMENT=%s was not pulled: %s", repo, error)
        return None


# ---------------------------------------------------------------------------- dataset card


def _distinct(values: Iterable, fmt: Callable = str) -> str:
    seen = list(dict.fromkeys(v for v in values if v is not None))
    return ", ".join(fmt(v) for v in seen) if seen else "-"


def _last(metrics: list[dict], key: str):
    return next((m[key] for m in reversed(metrics) if m.get(key) is not None), None)


def _setup_lines(records: list[dict]) -> list[str]:
    configs = [r["config"] for r in records]
    model = [c.get("model", {}) for c in configs]
    train = [c.get("train", {}) for c in configs]
    data = [c.get("data", {}) for c in configs]
    shape = _distinct(f"hidden {m.get('hidden_size')}, {m.get('num_hidden_layers')} layers, "
                      f"{m.get('num_attention_heads')}/{m.get('num_key_value_heads')} heads, FFN "
                      f"{m.get('intermediate_size')}, vocab {m.get('vocab_size')}" for m in model)
    per_step = _distinct(f"{t.get('batch_size')} x {t.get('seq_len')}" for t in train)
    seeds = sorted({r["seed"] for r in records if isinstance(r.get("seed"), int)})
    versions = _distinct(f"torch {c.get('versions', {}).get('torch')}" for c in configs)
    return [
        f"- Preset: {_distinct((c.get('preset') for c in configs), lambda v: f'`{v}`')}",
        f"- Variants: {_distinct((r['variant'] for r in records), lambda v: f'`{v}`')}",
        f"- Seeds: {', '.join(map(str, seeds)) or '-'}",
        f"- Steps per run: {_distinct(t.get('steps') for t in train)}",
        f"- Tokens per run: {_distinct((_last(r['metrics'], 'tokens') for r in records), lambda v: f'{v:,}')}"
        f" (batch x sequence per step: {per_step})",
        f"- Model: {shape}",
        f"- Peak learning rate: {_distinct(t.get('lr') for t in train)}",
        f"- Data: {_distinct((d.get('source') for d in data), lambda v: f'`{v}`')} "
        f"(tokenizer {_distinct((d.get('tokenizer') for d in data), lambda v: f'`{v}`')})",
        f"- Trained on: {_distinct(c.get('device') for c in configs)}; {versions}",
    ]


def _run_rows(records: list[dict]) -> list[str]:
    rows = ["| run | variant | seed | status | steps | final val loss | weights |",
            "|:--|:--|--:|:--|--:|--:|:--|"]
    for r in records:
        loss = r["summary"].get("final_val_loss", _last(r["metrics"], VAL_LOSS))
        loss_text = f"{loss:.4f}" if isinstance(loss, (int, float)) else "-"
        weights = "yes" if (Path(r["path"]) / "model.safetensors").exists() else "no"
        rows.append(f"| {r['name']} | `{r['variant']}` | {r['seed']} | {r['status']} | "
                    f"{_last(r['metrics'], 'step') or '-'} | {loss_text} | {weights} |")
    return rows


def dataset_card(experiment: str, repo: str, records: list[dict], with_optimizer: bool = False) -> str:
    """The README.md of a pushed experiment: front matter, Table 1, setup, runs, how to reproduce."""
    table = table1(records)
    variants = [str(v) for v in table["variant"]]  # baseline first, as in Table 1
    records = sorted(records, key=lambda r: (variants.index(str(r["variant"])), str(r["name"])))
    commands = sweep_commands(experiment, [r["config"] for r in records])
    ffns = list(dict.fromkeys(r["config"].get("model", {}).get("ffn", "?") for r in records))
    front = ["---", f"pretty_name: {json.dumps(f'FFN explorer experiment: {experiment}')}",
             "tags:", "- ffn-explorer", "- transformer-ffn", *(f"- ffn-{name}" for name in ffns),
             "viewer: false", "---"]
    intro = (f"Training runs of a Qwen2-style language model comparing feed-forward networks "
             f"({', '.join(ffns)}), made with the FFN explorer and pushed with "
             f"`python -m core.hub push {experiment} --repo {repo}`: {len(records)} runs, "
             f"{len(variants)} variant(s).")
    files = ("Each run is a folder `<variant>-s<seed>/` with `config.json` (everything needed to "
             "reproduce it), `metrics.jsonl` (one JSON object per logged step), `status.json`, "
             "`summary.json`, `tokenizer.json` and, where kept, the final weights `model.safetensors`.")
    files += (" `checkpoint/` holds the last checkpoint with optimizer state (`trainer_state.pt`, "
              "loaded with `weights_only=True`) for resuming." if with_optimizer else
              " No optimizer state is included.")
    retrain = (["Train the runs again from scratch (the commands recreate every run's config):", "",
                "```bash", *commands, "```"] if commands else
               ["The runs' settings are in each `config.json` (`python -m core.train --help`)."])
    return "\n".join([
        *front, "", f"# FFN explorer experiment `{experiment}`", "", intro, "",
        "## Results (Table 1)", "",
        "Final validation loss per variant (mean ± sample std over seeds) against the baseline, "
        "peak memory, throughput and parameters. " + TABLE1_NOTE, "",
        markdown_table(table), "",
        "## Setup", "", *_setup_lines(records), "",
        "## Runs", "", *_run_rows(records), "",
        "## Files", "", files, "",
        "## Reproduce", "",
        "Open the runs in the explorer (they appear under Curves, Results and Inspect):", "",
        "```bash", f"python -m core.hub pull {repo} --experiment {shlex.quote(experiment)}",
        "python app.py", "```", "", *retrain, "",
    ])


# ---------------------------------------------------------------------------- CLI


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m core.hub", description="Share experiments on the Hub.")
    sub = p.add_subparsers(dest="command", required=True)
    push_p = sub.add_parser("push", help="upload an experiment to a Hub dataset repo")
    push_p.add_argument("experiment")
    push_p.add_argument("--repo", required=True, help="owner/name of the dataset repo")
    push_p.add_argument("--private", action="store_true", help="create the repo private")
    push_p.add_argument("--with-optimizer", action="store_true",
                        help="also upload each run's last checkpoint with optimizer state")
    push_p.add_argument("--dry-run", action="store_true",
                        help="list the files and print the card; no network")
    model_p = sub.add_parser("push-model", help="upload one run as a model repo transformers loads")
    model_p.add_argument("run", help="EXPERIMENT/RUN under the runs root, or a run folder")
    model_p.add_argument("--repo", required=True, help="owner/name of the model repo")
    model_p.add_argument("--private", action="store_true", help="create the repo private")
    model_p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"),
                         help="weights' dtype in the repo")
    model_p.add_argument("--dataset-repo", default=None, metavar="OWNER/NAME",
                         help="the experiment's dataset repo to link (default: where core.hub pushed "
                              "or pulled it)")
    model_p.add_argument("--ffn-module", action="append", default=[], metavar="PATH",
                         help="the FFN file of a plugin run (repeatable)")
    model_p.add_argument("--dry-run", action="store_true",
                         help="list the files and print the card; no network")
    pull_p = sub.add_parser("pull", help="download an experiment from a Hub dataset repo")
    pull_p.add_argument("repo", help="owner/name of the dataset repo")
    pull_p.add_argument("--experiment", default=None, help="local name (default: the repo's name)")
    pull_p.add_argument("--force", action="store_true", help="replace an existing experiment")
    pull_p.add_argument("--revision", default=None, help="branch, tag or commit (default: main)")
    for sp in (push_p, model_p, pull_p):
        sp.add_argument("--runs-dir", default=None)
    return p


def _print_staged(folder: Path, files: list[str], repo: str) -> None:
    """A dry run's output: the staged files, their size and the card."""
    size = sum((folder / f).stat().st_size for f in files)
    print("\n".join(files))
    print(f"{len(files)} files, {size / 1e6:.1f} MB would be pushed to {repo}\n")
    print((folder / CARD).read_text())


def _dry_run(args: argparse.Namespace) -> None:
    repo = validate_repo_id(args.repo)
    with tempfile.TemporaryDirectory(prefix="explorer-push-") as tmp:
        files = stage_experiment(args.runs_dir, args.experiment, Path(tmp), repo, args.with_optimizer)
        _print_staged(Path(tmp), files, repo)


def _push_model(args: argparse.Namespace) -> None:
    from core import variants
    from core.sharing import hub_model  # torch and the exporter: only for this command

    for path in args.ffn_module:
        variants.load_plugin(path)
    if not args.dry_run:
        url = hub_model.push_model(args.run, args.repo, args.private, args.dtype, args.dataset_repo,
                                   args.runs_dir)
        print(f"pushed {args.run} to {url}")
        return
    run = hub_model.resolve_run(args.run, args.runs_dir)
    with tempfile.TemporaryDirectory(prefix="explorer-push-model-") as tmp:
        folder = Path(tmp) / "model"
        files = hub_model.stage_model(run, folder, args.repo, args.dtype, args.dataset_repo)
        _print_staged(folder, files, args.repo)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "push-model":
            _push_model(args)
        elif args.command == "push" and args.dry_run:
            _dry_run(args)
        elif args.command == "push":
            url = push(args.experiment, args.repo, args.private, args.with_optimizer, args.runs_dir)
            print(f"pushed {args.experiment} to {url}")
        else:
            path = pull(args.repo, args.experiment, args.force, args.runs_dir, args.revision)
            print(f"pulled {args.repo} into {path} ({len(list_runs(path.parent, path.name))} runs)")
    except (ValueError, OSError) as error:  # HubError is a ValueError: one line, no traceback
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0
