"""core.hub_model: push-model's card and upload, offline (HfApi is recorded, never reached)."""

import json
import shutil
import tempfile
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

from core.runs import Run, hub_dataset_repo, record_hub_dataset_repo
from core.sharing import hub, hub_model
from tests.conftest import REPO
from tests.test_hub import hub_calls, tree  # noqa: F401  (fixture)

SHIPPED = REPO / "runs" / "cpu-variants-lr0.004"


@pytest.fixture
def experiment(tmp_path):
    """A copy of the shipped cpu-variants experiment (dual-s0 has weights) in a runs root."""
    root = tmp_path / "runs"
    shutil.copytree(SHIPPED, root / SHIPPED.name, ignore=shutil.ignore_patterns("*.log", "run.lock"))
    return root, SHIPPED.name


def test_card_states_architecture_training_and_seed_statistics(experiment):
    root, name = experiment
    card = hub_model.model_card(Run(root / name / "dual-s0"), "me/dual-tiny")
    summaries = [json.loads((root / name / f"dual-s{s}" / "summary.json").read_text()) for s in range(3)]
    losses = np.array([s["final_val_loss"] for s in summaries])
    assert f"Final validation loss of this run: {losses[0]:.4f}." in card
    assert f"over 3 seeds of experiment `{name}`: {losses.mean():.3f} ± {losses.std(ddof=1):.3f}" in card
    config = json.loads((root / name / "dual-s0" / "config.json").read_text())
    for option, value in config["model"]["ffn_options"].items():
        assert f"| `{option}` | `{json.dumps(value)}` |" in card
    assert "- total: 2,034,836" in card  # core.model.parameter_counts of the tiny dual model
    assert "Tokens seen: 1,638,400" in card  # 400 steps x 16 x 256
    assert "trust_remote_code=True" in card and "datasets:" not in card
    assert "python -m core.sweep --experiment cpu-variants-lr0.004 --preset tiny --ffn dual --seeds 0" in card
    assert "python -m core.train --config explorer_config.json" in card
    assert "| geglu | 3 |" in card  # the experiment's Table 1


def test_card_of_a_swiglu_run_needs_no_remote_code(experiment):
    root, name = experiment
    card = hub_model.model_card(Run(root / name / "swiglu-s1"), "me/swiglu-tiny")
    assert "trust_remote_code" not in card and 'from_pretrained("me/swiglu-tiny")' in card


def test_card_links_the_dataset_repo_the_experiment_was_pushed_to(experiment, hub_calls):  # noqa: F811
    root, name = experiment
    hub.push(name, "me/variants", runs_dir=root)
    assert hub_dataset_repo(root, name) == "me/variants"
    card = hub_model.model_card(Run(root / name / "dual-s0"), "me/dual-tiny")
    assert "datasets:\n- me/variants" in card
    assert "(https://huggingface.co/datasets/me/variants)" in card
    assert "[other/x]" in hub_model.model_card(Run(root / name / "dual-s0"), "me/d", "other/x")


def test_push_model_uploads_an_export_that_loads(experiment, hub_calls, tmp_path, monkeypatch):  # noqa: F811
    root, name = experiment
    record_hub_dataset_repo(root / name, "me/variants")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    kept = {}  # the fixture's recorder is replaced: this one keeps a copy of the folder

    def upload_folder(self, **kwargs):
        kept["files"] = shutil.copytree(kwargs["folder_path"], tmp_path / f"up-{uuid.uuid4().hex[:8]}")
        kept["kwargs"] = kwargs

    monkeypatch.setattr("huggingface_hub.HfApi.upload_folder", upload_folder)
    url = hub_model.push_model(f"{name}/dual-s0", "me/dual-tiny", dtype="bfloat16", runs_dir=root)
    assert url.endswith("me/dual-tiny")
    create = next(kwargs for call, kwargs in hub_calls if call == "create_repo")
    assert create["repo_id"] == "me/dual-tiny" and "repo_type" not in create  # a model repo
    folder = kept["files"]
    names = {p.name for p in folder.iterdir()}
    assert {"README.md", "config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
            "generation_config.json", "modeling_ffn_explorer.py", "dual.py", "explorer_config.json"} <= names
    model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True)
    assert next(model.parameters()).dtype == torch.bfloat16
    assert list((tmp_path / "tmp").iterdir()) == []  # the staging folder is gone


def test_push_model_offline_is_one_message_and_changes_nothing(experiment, tmp_path, monkeypatch):
    root, name = experiment
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    before = tree(root)
    with pytest.raises(hub.HubError, match="needs the Hugging Face Hub.*nothing was changed locally"):
        hub_model.push_model(f"{name}/dual-s0", "me/dual-tiny", runs_dir=root)
    assert tree(root) == before and list((tmp_path / "tmp").iterdir()) == []


@pytest.mark.parametrize("args, message", [
    (["nope/dual-s0"], "no run 'nope/dual-s0'"),
    (["{name}/swiglu-s0"], "has no weights"),
    (["{name}/dual-s0", "--repo", "bad repo"], "repo"),
])
def test_push_model_refuses_bad_input_before_the_network(experiment, capsys, args, message):
    root, name = experiment
    args = [a.format(name=name) for a in args]
    repo = [] if "--repo" in args else ["--repo", "me/x"]
    assert hub.main(["push-model", *args, *repo, "--dry-run", "--runs-dir", str(root)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_dry_run_lists_files_and_prints_the_card(experiment, capsys):
    root, name = experiment
    assert hub.main(["push-model", f"{name}/dual-s0", "--repo", "me/dual-tiny", "--dry-run",
                     "--runs-dir", str(root)]) == 0
    out = capsys.readouterr().out
    assert "model.safetensors" in out and "would be pushed to me/dual-tiny" in out
    assert "# dual-tiny" in out
    assert Path(root / name / "dual-s0" / "model.safetensors").exists()
