import pytest

from core.runs import Run
from core.studies.recipes import RECIPES, Recipe, best_lrs, comparison_records, experiment_name, run_recipe


def test_recipes_are_valid_grids():
    from core.jobs.launch import grid

    for name, recipe in RECIPES.items():
        assert recipe.shared_lr in recipe.lrs, name
        cells = grid(recipe.preset, list(recipe.variants), list(recipe.seeds), [f"train.lr={recipe.lrs[0]}"],
                     recipe.steps, recipe.data)
        assert len(cells) == len(recipe.variants) * len(recipe.seeds)
    assert RECIPES["paper-ablation"].preset == "paper" and RECIPES["paper-ablation"].data == "fineweb"
    assert RECIPES["paper-ablation"].steps == 400


def _fake_run(root, name, lr, variant, seed, loss):
    run = Run.at(root, experiment_name(name, lr), f"{variant}-s{seed}")
    run.write_config({"variant": variant, "seed": seed})
    run.write_summary({"final_val_loss": loss})
    run.append_metrics({"step": 1, "val/loss": loss})
    run.write_status("completed")


def test_best_lr_and_comparisons_by_hand(tmp_path, monkeypatch):
    monkeypatch.setitem(RECIPES, "t", Recipe("micro", 2, (1e-3, 2e-3), 2e-3, seeds=(0, 1)))
    for lr, swiglu, dual in ((1e-3, 5.0, 6.0), (2e-3, 5.5, 5.2)):
        _fake_run(tmp_path, "t", lr, "swiglu", 0, swiglu)
        _fake_run(tmp_path, "t", lr, "dual", 0, dual)
    assert best_lrs("t", tmp_path) == {"swiglu": 1e-3, "dual": 2e-3}
    records = comparison_records("t", tmp_path)
    assert {(r["variant"], r["summary"]["final_val_loss"]) for r in records["best_lr"]} == {
        ("swiglu", 5.0), ("dual", 5.2)}
    assert {r["variant"] for r in records["shared_lr"]} == {"swiglu", "dual"}


def test_unknown_recipe(tmp_path):
    with pytest.raises(ValueError, match="unknown recipe"):
        run_recipe("nope", tmp_path)


@pytest.mark.slow
def test_micro_recipe_runs_both_phases(tmp_path, monkeypatch):
    recipe = Recipe("micro", 6, (1e-3, 3e-3), 3e-3, seeds=(0, 1),
                    overrides=("eval_every=3", "checkpoint_every=3", "log_every=3"))
    monkeypatch.setitem(RECIPES, "mini", recipe)
    codes = run_recipe("mini", tmp_path, progress=False)
    assert codes and all(code == 0 for code in codes.values())
    shared = comparison_records("mini", tmp_path)["shared_lr"]
    assert sorted(r["name"] for r in shared) == ["dual-s0", "dual-s1", "swiglu-s0", "swiglu-s1"]
    assert len(comparison_records("mini", tmp_path)["best_lr"]) == 4
