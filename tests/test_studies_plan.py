"""core.studies.plan: the built-in studies (studies/*.toml) produce exactly the cells the old
RECIPES/LADDERS registries did (tests/data/study_cells.json, frozen from them before they went)."""

import hashlib
import json

import pytest

from core.studies.plan import experiment_name, final_phases, first_phases, point_steps
from core.studies.study import builtin_names, load_study
from tests.conftest import REPO

FROZEN = json.loads((REPO / "tests" / "data" / "study_cells.json").read_text())["studies"]


def _row(phase, cell) -> dict:
    config = cell.config.to_dict()
    return {"phase": phase.kind, "experiment": phase.experiment, "run": cell.name, "variant": cell.label,
            "seed": cell.seed, "steps": config["train"]["steps"], "lr": config["train"]["lr"],
            "hidden_size": config["model"]["hidden_size"], "source": config["data"]["source"],
            "config_sha256": hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()}


def _best_maps(study) -> dict[str, dict[str, float]]:
    """The frozen file's hypothetical best-lr maps (see its "maps")."""
    shared = study.shared_lr if study.shared_lr is not None else study.lrs[1]
    return {"shared": {v: shared for v in study.variants},
            "mixed": {v: study.lrs[i % len(study.lrs)] for i, v in enumerate(study.variants)}}


def test_the_five_old_builtins_are_the_frozen_ones():
    # cpu-controls came after the registries (a study file from the start): nothing to freeze
    assert sorted(set(builtin_names()) - {"cpu-controls"}) == sorted(FROZEN)


@pytest.mark.parametrize("name", sorted(FROZEN))
def test_builtin_study_makes_the_old_cells(name):
    study = load_study(name)
    for key, best in _best_maps(study).items():
        rows = []
        for point in study.points:
            steps = point_steps(study, point)
            for phase in first_phases(study, point, steps) + final_phases(study, point, steps, best):
                rows += [_row(phase, cell) for cell in phase.cells]
        assert rows == FROZEN[name][key], (name, key)


def test_experiment_names_keep_the_old_rules():
    assert experiment_name("cpu-ablation", "", 2e-3) == "cpu-ablation-lr0.002"
    assert experiment_name("cpu-scaling", "d96-L3", 1.6e-2, sweep=True) == "cpu-scaling-d96-L3-sweep-lr0.016"
    assert experiment_name("cpu-scaling", "d96-L3", 4e-3) == "cpu-scaling-d96-L3-lr0.004"
    assert experiment_name("mine", "ffn_hidden=256", None) == "mine-ffn_hidden=256"
