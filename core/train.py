"""Train one run: ``python -m core.train`` (CLI: core/training/cli.py; trainer: core/training/trainer.py)."""

import sys

from core.jobs.launch import reexec_with_malloc_env

if __name__ == "__main__":
    reexec_with_malloc_env()  # first: the process it replaces has not imported torch yet
    from core.training.cli import main

    sys.exit(main())
