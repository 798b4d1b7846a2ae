"""Freeze every cell the old RECIPES/LADDERS registries produce (run once, before studies/*.toml
replaced them; kept for the record: it imports the registries that no longer exist, so it runs
only on a checkout before the studies merge, e.g. commit e492c74, which froze the current file:
the registries of 1f2d4cc with the router-control options that commit added to every dual config).

``python tests/data/freeze_study_cells.py > tests/data/study_cells.json``. Phase 1 is frozen fully;
phase 2 for two hypothetical best-lr maps ("shared": every variant's best is the shared lr, or for
ladders the grid's second lr; "mixed": the variants' bests differ). Each cell: experiment, run name,
variant label, seed, a few readable config fields and the sha256 of its config's canonical JSON.
"""

import hashlib
import json
import sys
from pathlib import Path
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from core.studies import ladder, recipes  # noqa: E402


def cell_row(experiment, cell, phase):
    config = cell.config.to_dict()
    digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()
    return {"phase": phase, "experiment": experiment, "run": cell.name, "variant": cell.label,
            "seed": cell.seed,
            "steps": config["train"]["steps"], "lr": config["train"]["lr"],
            "hidden_size": config["model"]["hidden_size"], "source": config["data"]["source"],
            "config_sha256": digest}


def capture(run, name, best):
    """Cells `run(name, root)` hands to plan(), per phase boundary, with best_lrs mocked."""
    calls, state = [], {"phase": "sweep"}

    def fake_plan(cells, root, experiment):
        if "-sweep-" in experiment:  # a ladder's next rung starts with its sweep
            state["phase"] = "sweep"
        calls.extend(cell_row(experiment, c, state["phase"]) for c in cells)
        return []

    def fake_best(*args):
        state["phase"] = "final"
        return best(*args)

    with mock.patch.object(sys.modules[run.__module__], "plan", fake_plan), \
            mock.patch.object(sys.modules[run.__module__], "execute", lambda *a, **k: {}), \
            mock.patch.object(sys.modules[run.__module__], "best_lrs", fake_best):
        run(name, "/nonexistent")
    return calls


def main():
    out = {}
    for name, recipe in recipes.RECIPES.items():
        maps = {"shared": {v: recipe.shared_lr for v in recipe.variants},
                "mixed": {v: recipe.lrs[i % len(recipe.lrs)] for i, v in enumerate(recipe.variants)}}
        out[name] = {}
        for key, best in maps.items():
            out[name][key] = capture(recipes.run_recipe, name, lambda n, r, best=best: dict(best))
    for name, each in ladder.LADDERS.items():
        maps = {"shared": {v: each.lrs[1] for v in each.variants},
                "mixed": {v: each.lrs[i % len(each.lrs)] for i, v in enumerate(each.variants)}}
        out[name] = {}
        for key, best in maps.items():
            out[name][key] = capture(ladder.run_ladder, name, lambda n, rung, r, best=best: dict(best))
    json.dump({"maps": "shared: every variant's best = the shared lr (ladders: lrs[1]); mixed: "
               "variant i's best = lrs[i % len(lrs)]", "studies": out}, sys.stdout, indent=1, sort_keys=True)
    print()


if __name__ == "__main__":
    main()
