"""core.hub up to the Hub call: file selection, dataset card, pull validation, offline failures.

The Hub itself is never reached: HfApi methods are monkeypatched to record their calls and
snapshot_download to copy from a local folder laid out like a pushed repo.
"""

import fnmatch
import hashlib
import os
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import huggingface_hub
import pytest
import yaml

from core.analysis.stats import format_table, table1
from core.config import apply_overrides, preset
from core.jobs.launch import grid
from core.jobs.runner import plan
from core.runs import Run, experiment_records, hub_dataset_repo, list_experiments, list_runs
from core.sharing import hub, hub_common
from core.training.trainer import run_record

REPO = Path(__file__).resolve().parent.parent
RUN_NAMES = ["dual-s0", "dual-s1", "swiglu-s0", "swiglu-s1"]
SHARED = ["config.json", "metrics.jsonl", "model.safetensors", "status.json", "summary.json",
          "tokenizer.json"]


def make_run(root: Path, experiment: str, ffn: str, seed: int, steps: int = 20) -> Run:
    """A finished micro run written through the Run API, with every file a real run leaves."""
    config = apply_overrides(preset("micro"), [f"ffn={ffn}", f"train.seed={seed}",
                                               f"train.steps={steps}", "train.lr=0.001"])
    run = Run.at(root, experiment, f"{ffn}-s{seed}")
    run.write_config(run_record(config, "cpu"))
    for step in (10, 20):
        run.append_metrics({"step": step, "tokens": step * 2048, "train/loss": 7.0 - step / 10 - seed / 100,
                            "val/loss": 7.1 - step / 10 - seed / 50 - (ffn == "dual") / 100})
    import torch

    run.save_checkpoint({"w": torch.full((4,), float(seed))}, {"optimizer": {}}, step=steps)
    run.write_summary({"final_val_loss": 5.1 - seed / 50 - (ffn == "dual") / 100, "params_total": 1234,
                       "peak_mem_gb": 0.5, "tok_s": 1000.0})
    run.write_status("completed", step=steps)
    tokenizer = root / "tokenizer-src.json"
    tokenizer.write_text('{"model": "fake"}')
    run.save_tokenizer(tokenizer)
    with run.open_log() as log:
        log.write(b"training...\n")
    with run.lock():
        pass  # leaves run.lock behind, as a finished trainer does
    return run


@pytest.fixture
def experiment(tmp_path) -> tuple[Path, str]:
    root = tmp_path / "runs"
    for ffn in ("swiglu", "dual"):
        for seed in (0, 1):
            make_run(root, "exp", ffn, seed)
    (root / "tokenizer-src.json").unlink()
    return root, "exp"


def tree(folder: Path) -> dict[str, str]:
    """relative path -> sha256 of every file (and '/' for folders) under `folder`."""
    out = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        out[rel] = "/" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return out


@pytest.fixture
def hub_calls(monkeypatch):
    """Pretend the Hub is reachable and a token is set; record HfApi calls and uploaded files."""
    calls: list[tuple[str, dict]] = []

    def create_repo(self, repo_id, **kwargs):
        calls.append(("create_repo", {"repo_id": repo_id, **kwargs}))
        return f"https://huggingface.co/datasets/{repo_id}"

    def upload_folder(self, **kwargs):
        folder = Path(kwargs["folder_path"])
        files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
        card = (folder / "README.md").read_text()
        calls.append(("upload_folder", {**kwargs, "files": files, "card": card}))

    monkeypatch.setattr(hub_common, "require_hub", lambda what: None)
    monkeypatch.setattr(hub_common, "get_token", lambda: "hf_test_token")
    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", create_repo)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
    return calls


# ---------------------------------------------------------------------------- repo ids


@pytest.mark.parametrize("repo", ["noslash", "a/b/c", "/name", "owner/", "-a/b", "a/b-", "a/.b", "a/b.git",
                                  "a/b--c", "a..b/c", "a b/c", "a/b?", "", "o/" + "x" * 95, "ö/x"])
def test_bad_repo_ids_are_refused(repo):
    with pytest.raises(hub.HubError, match="invalid Hub repo id.*owner/name"):
        hub.validate_repo_id(repo)


@pytest.mark.parametrize("repo", ["owner/name", "Owner-1/ffn_demo.v2", "a/b", "user_x/exp-1_"])
def test_good_repo_ids_pass(repo):
    assert hub.validate_repo_id(repo) == repo


# ---------------------------------------------------------------------------- push


def test_stage_selects_shared_files_only(experiment, tmp_path):
    root, name = experiment
    dest = tmp_path / "stage"
    dest.mkdir()
    files = hub.stage_experiment(root, name, dest, "me/exp")
    expected = ["README.md", "explorer.json"] + [f"{r}/{f}" for r in RUN_NAMES for f in SHARED]
    assert files == sorted(expected)
    # no checkpoint/optimizer state, no train.log, no run.lock, although every run has them
    assert all((root / name / r / "checkpoint" / "trainer_state.pt").exists() for r in RUN_NAMES)
    assert all((root / name / r / "train.log").exists() for r in RUN_NAMES)
    source = tree(root / name / "swiglu-s0")
    assert tree(dest / "swiglu-s0") == {f: h for f, h in source.items() if f in SHARED}


def test_stage_with_optimizer_adds_the_checkpoint(experiment, tmp_path):
    root, name = experiment
    dest = tmp_path / "stage"
    dest.mkdir()
    files = hub.stage_experiment(root, name, dest, "me/exp", with_optimizer=True)
    for run in RUN_NAMES:
        assert {f"{run}/checkpoint/trainer_state.pt", f"{run}/checkpoint/model.safetensors"} <= set(files)
    assert not [f for f in files if f.endswith(("train.log", "run.lock"))]


def test_push_creates_a_dataset_repo_and_uploads_the_staging(experiment, hub_calls, tmp_path, monkeypatch):
    root, name = experiment
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    url = hub.push(name, "me/exp", runs_dir=root)
    assert url == "https://huggingface.co/datasets/me/exp"
    (create, created), (upload, uploaded) = hub_calls
    assert create == "create_repo" and created == {"repo_id": "me/exp", "repo_type": "dataset",
                                                   "private": None, "exist_ok": True}
    assert upload == "upload_folder" and uploaded["repo_id"] == "me/exp"
    assert uploaded["repo_type"] == "dataset" and uploaded["delete_patterns"] == ["*"]
    assert uploaded["files"] == sorted(["README.md", "explorer.json"] + [f"{r}/{f}" for r in RUN_NAMES
                                                                         for f in SHARED])
    assert list((tmp_path / "tmp").iterdir()) == []  # the staging folder is gone
    hub.push(name, "me/private-exp", private=True, runs_dir=root)
    assert hub_calls[2][1]["private"] is True


def test_push_refuses_runs_in_training(experiment, hub_calls):
    root, name = experiment
    with Run.at(root, name, "dual-s1").lock(), pytest.raises(hub.HubError, match="still training.*dual-s1"):
        hub.push(name, "me/exp", runs_dir=root)
    assert hub_calls == []


def test_push_of_a_missing_experiment_is_refused(tmp_path, hub_calls):
    with pytest.raises(hub.HubError, match="no runs in experiment 'nope'"):
        hub.push("nope", "me/exp", runs_dir=tmp_path)
    with pytest.raises(ValueError, match="invalid experiment name"):
        hub.push("../etc", "me/exp", runs_dir=tmp_path)
    assert hub_calls == []


def test_push_without_token_fails_before_any_hub_call(experiment, hub_calls, monkeypatch):
    root, name = experiment
    monkeypatch.setattr(hub_common, "get_token", lambda: None)
    with pytest.raises(hub.HubError, match="token with write access.*HF_TOKEN"):
        hub.push(name, "me/exp", runs_dir=root)
    assert hub_calls == []


def test_push_hub_errors_become_one_message(experiment, hub_calls, monkeypatch):
    root, name = experiment

    def refuse(self, repo_id, **kwargs):
        raise ConnectionError("connection reset by peer\nmore detail")

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", refuse)
    message = r"^pushing to me/exp failed: ConnectionError: connection reset by peer$"
    with pytest.raises(hub.HubError, match=message):
        hub.push(name, "me/exp", runs_dir=root)


# ---------------------------------------------------------------------------- card


def sweep_args(command: str) -> dict:
    """The flags of a `python -m core.sweep` command line, parsed the way core.sweep reads them."""
    words = shlex.split(command)
    assert words[:3] == ["python", "-m", "core.sweep"]
    out: dict[str, list[str]] = {}
    key = None
    for word in words[3:]:
        if word.startswith("--"):
            key = word[2:]
            out.setdefault(key, [])
        else:
            out[key].append(word)
    return out


def test_card_front_matter_table_setup_and_reproduction(experiment):
    root, name = experiment
    card = hub.dataset_card(name, "me/exp", experiment_records(root, name))
    _, front, body = card.split("---\n", 2)
    meta = yaml.safe_load(front)
    assert meta["pretty_name"] == "FFN explorer experiment: exp"
    assert "ffn-explorer" in meta["tags"] and meta["viewer"] is False
    assert {"ffn-swiglu", "ffn-dual"} <= set(meta["tags"]) and "(swiglu, dual)" in body
    # Table 1 as markdown, baseline first
    results = body.split("## Results (Table 1)")[1].split("## Setup")[0]
    table = [line for line in results.splitlines() if line.startswith("| ")]
    assert table[0] == ("| variant | seeds | val loss | delta | 95% CI (Welch) | 95% CI (bootstrap) "
                        "| p (Welch) | p (paired by seed) | MDE (80%) | seeds for 80% | peak mem GB | tok/s "
                        "| params | health |")
    assert table[2] == ("| swiglu | 2 | 5.090 ± 0.014 | +0.0000 | - | - | - | - | - | - | 0.50 | 1,000 "
                        "| 1,234 | ok |")
    assert table[3].startswith("| dual | 2 | 5.080 ± 0.014 | -0.0100 | [") and len(table) == 4
    for line in ("- Preset: `micro`", "- Variants: `swiglu`, `dual`", "- Seeds: 0, 1",
                 "- Steps per run: 20", "- Tokens per run: 40,960", "- Data: `builtin` (tokenizer `bpe`)",
                 "- Peak learning rate: 0.001"):
        assert line in body, line
    assert "python -m core.hub pull me/exp --experiment exp" in body
    assert "No optimizer state is included." in body
    commands = [line for line in body.splitlines() if line.startswith("python -m core.sweep")]
    assert commands == ["python -m core.sweep --experiment exp --preset micro --ffn swiglu dual --seeds 0 1 "
                        "--steps 20 --set train.lr=0.001"]


def test_card_sweep_command_recreates_every_config(experiment):
    root, name = experiment
    make_run(root, name, "dual", 2, steps=30)  # another group: other steps, one seed
    (root / "tokenizer-src.json").unlink()
    commands = hub.sweep_commands(name, [r["config"] for r in experiment_records(root, name)])
    assert len(commands) == 2
    for command in commands:
        args = sweep_args(command)
        cells = grid(args["preset"][0], args.get("ffn", []) + args.get("variant", []),
                     [int(s) for s in args["seeds"]], args.get("set", []), int(args["steps"][0]),
                     (args.get("data") or [None])[0])
        assert plan(cells, root, name) == []  # same configs (plan raises otherwise), all completed


def test_card_has_no_sweep_command_for_unknown_presets(experiment):
    root, name = experiment
    configs = [{**r["config"], "preset": "custom"} for r in experiment_records(root, name)]
    assert hub.sweep_commands(name, configs) == []


def test_markdown_table_keeps_format_table_cells(experiment):
    root, name = experiment
    frame = table1(experiment_records(root, name))
    text = format_table(frame).splitlines()
    lines = hub.markdown_table(frame).splitlines()
    assert len(lines) == len(text) == 2 + len(frame)
    for plain, markdown in zip(text[2:], lines[2:]):
        cells = [c.strip() for c in markdown.strip("| ").split(" | ")]
        assert len(cells) == 14 and " ".join(cells) == " ".join(plain.split())


# ---------------------------------------------------------------------------- pull


def fake_hub_repo(root: Path, experiment: str, dest: Path, **kwargs) -> Path:
    """A folder laid out like the Hub repo a push of `experiment` makes (with .gitattributes)."""
    dest.mkdir(parents=True)
    hub.stage_experiment(root, experiment, dest, "me/exp", **kwargs)
    (dest / ".gitattributes").write_text("*.safetensors filter=lfs diff=lfs merge=lfs -text\n")
    return dest


@pytest.fixture
def fake_download(monkeypatch, tmp_path):
    """snapshot_download copying from tmp_path/'hub'/<owner>/<name>, honouring allow_patterns."""
    calls = []
    monkeypatch.setattr(hub_common, "require_hub", lambda what: None)

    def snapshot_download(repo_id, repo_type=None, revision=None, local_dir=None, allow_patterns=None):
        calls.append({"repo_id": repo_id, "repo_type": repo_type, "local_dir": local_dir})
        assert repo_type == "dataset"
        source = tmp_path / "hub" / repo_id
        for path in sorted(source.rglob("*")):
            rel = path.relative_to(source).as_posix()
            wanted = allow_patterns is None or any(fnmatch.fnmatchcase(rel, p) for p in allow_patterns)
            if wanted and (path.is_file() or path.is_symlink()):
                target = Path(local_dir) / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, target, follow_symlinks=False)
        meta = Path(local_dir) / ".cache" / "huggingface" / "download"
        meta.mkdir(parents=True, exist_ok=True)
        (meta / "README.md.metadata").write_text("etag")
        return str(local_dir)

    monkeypatch.setattr(hub, "snapshot_download", snapshot_download)
    return calls


def test_pull_round_trip(experiment, tmp_path, fake_download):
    root, name = experiment
    fake_hub_repo(root, name, tmp_path / "hub" / "me" / "exp")
    target = tmp_path / "other-runs"
    path = hub.pull("me/exp", runs_dir=target)
    assert path == target / "exp" and list_experiments(target) == ["exp"]
    assert [r.name for r in list_runs(target, "exp")] == RUN_NAMES
    assert sorted(p.name for p in target.iterdir()) == ["exp"]  # no staging or download leftovers
    assert sorted(p.name for p in path.iterdir()) == sorted([".hub.json", "README.md", "explorer.json",
                                                             *RUN_NAMES])
    assert hub_dataset_repo(target, "exp") == "me/exp"  # model cards link it
    for run in RUN_NAMES:
        assert sorted(p.name for p in (path / run).iterdir()) == SHARED
        assert tree(path / run) == {f: h for f, h in tree(root / name / run).items() if f in SHARED}
    pulled = experiment_records(target, "exp")
    assert [r["metrics"] for r in pulled] == [r["metrics"] for r in experiment_records(root, name)]
    assert hub.pull("me/exp", experiment="copy", runs_dir=target) == target / "copy"


def test_pull_keeps_the_optimizer_state_when_pushed(experiment, tmp_path, fake_download):
    root, name = experiment
    fake_hub_repo(root, name, tmp_path / "hub" / "me" / "exp", with_optimizer=True)
    path = hub.pull("me/exp", runs_dir=tmp_path / "pulled")
    run = Run(path / "dual-s1")
    weights, state = run.load_checkpoint()
    assert state["step"] == 20 and float(weights["w"][0]) == 1.0


def test_pull_into_an_existing_experiment_needs_force(experiment, tmp_path, fake_download, capsys):
    root, name = experiment
    fake_hub_repo(root, name, tmp_path / "hub" / "me" / "exp")
    make_run(root, name, "dual", 7)  # local work the pull would destroy
    before = tree(root)
    with pytest.raises(hub.HubError, match="already exists.*--force"):
        hub.pull("me/exp", runs_dir=root)
    assert hub.main(["pull", "me/exp", "--runs-dir", str(root)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: experiment 'exp' already exists") and err.count("\n") == 1
    assert tree(root) == before and fake_download == []  # refused before any download
    hub.pull("me/exp", force=True, runs_dir=root)
    assert [r.name for r in list_runs(root, name)] == RUN_NAMES  # replaced whole: dual-s7 is gone
    assert sorted(p.name for p in root.iterdir() if p.name.startswith(".")) == []


def test_pull_force_refuses_while_a_run_trains(experiment, tmp_path, fake_download):
    root, name = experiment
    fake_hub_repo(root, name, tmp_path / "hub" / "me" / "exp")
    before = tree(root)
    with Run.at(root, name, "swiglu-s1").lock(), pytest.raises(hub.HubError, match="in training"):
        hub.pull("me/exp", force=True, runs_dir=root)
    assert tree(root) == before


def _unknown_field(repo: Path) -> None:
    config = repo / "dual-s0" / "config.json"
    config.write_text(config.read_text().replace('"hidden_size"', '"hidden_sizes"'))


def _no_config(repo: Path) -> None:
    (repo / "dual-s0" / "config.json").unlink()


def _hidden_run(repo: Path) -> None:
    shutil.copytree(repo / "dual-s0", repo / ".sneaky")


def _bad_json(repo: Path) -> None:
    (repo / "swiglu-s0" / "status.json").write_text("[1, 2")


def _link(repo: Path) -> None:
    (repo / "swiglu-s0" / "tokenizer.json").unlink()
    (repo / "swiglu-s0" / "tokenizer.json").symlink_to("/etc/passwd")


def _only_card(repo: Path) -> None:
    for path in repo.iterdir():
        if path.is_dir():
            shutil.rmtree(path)


def _manifest_lists_more(repo: Path) -> None:
    shutil.rmtree(repo / "swiglu-s1")


@pytest.mark.parametrize("damage, message", [
    (_unknown_field, "dual-s0/config.json is not a valid run config: unknown model config field"),
    (_no_config, "run dual-s0 has no config.json"),
    (_hidden_run, "a file core.hub does not pull: '.sneaky/"),
    (_bad_json, "swiglu-s0/status.json is not valid JSON"),
    (_link, "swiglu-s0/tokenizer.json: links are not allowed"),
    (_only_card, "holds no runs"),
    (_manifest_lists_more, "runs listed in explorer.json were not downloaded: swiglu-s1"),
])
def test_pull_validates_before_writing(experiment, tmp_path, fake_download, damage, message):
    root, name = experiment
    damage(fake_hub_repo(root, name, tmp_path / "hub" / "me" / "exp"))
    target = tmp_path / "target"
    target.mkdir()
    with pytest.raises(hub.HubError, match=message.replace("(", r"\(")):
        hub.pull("me/exp", runs_dir=target)
    assert list(target.iterdir()) == []  # nothing half-written, no staging left behind


@pytest.mark.parametrize("extra", ["dual-s0/evil.pkl", "dual-s0/checkpoint/optimizer.pt", "notes.txt",
                                   "a/b/c/config.json"])
def test_pull_refuses_files_it_does_not_know(experiment, tmp_path, fake_download, monkeypatch, extra):
    """A download holding more than the allow_patterns asked for (pickles above all) is refused."""
    root, name = experiment
    repo = fake_hub_repo(root, name, tmp_path / "hub" / "me" / "exp")
    (repo / extra).parent.mkdir(parents=True, exist_ok=True)
    (repo / extra).write_bytes(b"\x80\x04K\x01.")
    real = hub.snapshot_download
    monkeypatch.setattr(hub, "snapshot_download",
                        lambda *args, **kwargs: real(*args, **{**kwargs, "allow_patterns": None}))
    target = tmp_path / "target"
    with pytest.raises(hub.HubError, match="does not pull"):
        hub.pull("me/exp", runs_dir=target)
    assert not target.exists() or list(target.iterdir()) == []


def test_pull_patterns_cover_what_push_writes(experiment, tmp_path):
    root, name = experiment
    dest = tmp_path / "stage"
    dest.mkdir()
    files = hub.stage_experiment(root, name, dest, "me/exp", with_optimizer=True)
    patterns = hub.pull_patterns()
    assert all(any(fnmatch.fnmatchcase(f, p) for p in patterns) for f in files)
    assert not any(fnmatch.fnmatchcase(".gitattributes", p) for p in patterns)


# ---------------------------------------------------------------------------- offline


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("mode", ["offline flag", "unreachable"])
def test_offline_failure_is_clear_fast_and_writes_nothing(experiment, tmp_path, monkeypatch, mode):
    root, name = experiment
    if mode == "unreachable":  # the socket probe path: nothing listens on this port
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{_free_port()}")
        reason = "cannot be reached"
    else:
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        reason = "HF_HUB_OFFLINE is set"
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    fresh = tmp_path / "fresh"
    before = tree(root)
    for call in (lambda: hub.push(name, "me/exp", runs_dir=root),
                 lambda: hub.pull("me/exp", runs_dir=fresh),
                 lambda: hub.pull("me/exp", experiment=name, force=True, runs_dir=root)):
        started = time.monotonic()
        with pytest.raises(hub.HubError, match=f"needs the Hugging Face Hub, but .*{reason}.*nothing was "
                                               "changed locally"):
            call()
        assert time.monotonic() - started < 2.0
    assert tree(root) == before and not fresh.exists() and list((tmp_path / "tmp").iterdir()) == []


def test_cli_offline_error_is_one_line(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-m", "core.hub", "pull", "me/exp", "--runs-dir", str(tmp_path)],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.startswith("error: pulling me/exp needs the Hugging Face Hub, but HF_HUB_OFFLINE")
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_cli_dry_run_needs_no_network(experiment, capsys):
    root, name = experiment
    assert hub.main(["push", name, "--repo", "me/exp", "--dry-run", "--runs-dir", str(root)]) == 0
    out = capsys.readouterr().out
    assert "dual-s0/model.safetensors" in out and "train.log" not in out
    assert "# FFN explorer experiment" in out


# ---------------------------------------------------------------------------- app start-up


def test_pull_at_start(experiment, tmp_path, fake_download, monkeypatch, caplog):
    root, name = experiment
    fake_hub_repo(root, name, tmp_path / "hub" / "me" / "exp")
    target = tmp_path / "space-runs"
    assert hub.pull_at_start(target, env={}) is None
    assert hub.pull_at_start(target, env={"EXPLORER_HUB_EXPERIMENT": "me/exp"}) == "exp"
    assert [r.name for r in list_runs(target, "exp")] == RUN_NAMES
    calls = len(fake_download)
    assert hub.pull_at_start(target, env={"EXPLORER_HUB_EXPERIMENT": "me/exp"}) == "exp"
    assert len(fake_download) == calls  # already there: kept, not pulled again
    with caplog.at_level("WARNING", logger="core.sharing.hub"):
        assert hub.pull_at_start(target, env={"EXPLORER_HUB_EXPERIMENT": "not a repo"}) is None
        monkeypatch.setattr(hub_common, "require_hub", _offline)
        assert hub.pull_at_start(target, env={"EXPLORER_HUB_EXPERIMENT": "me/other"}) is None
    warnings = [r.getMessage() for r in caplog.records]
    assert any("EXPLORER_HUB_EXPERIMENT=not a repo was not pulled: invalid Hub repo" in w for w in warnings)
    assert any("EXPLORER_HUB_EXPERIMENT=me/other was not pulled" in w and "Hub" in w for w in warnings)
    assert list_experiments(target) == ["exp"]


def _offline(what: str) -> None:
    raise hub.HubError(f"{what} needs the Hugging Face Hub, but HF_HUB_OFFLINE is set")
