"""Studies: ablations as data. A study file (studies/*.toml, or a user's own) names its variants,
seeds, lr grid, axis and selection rule (study.py); plan.py turns it into experiments and cells,
select.py holds the one best-lr rule, run.py runs it (recording manifest.py), results.py and
report.py read it back.
"""
