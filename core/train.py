"""Train one run: ``python -m core.train`` (CLI: core/training/cli.py; trainer: core/training/trainer.py)."""

import sys

from core.training.cli import main, reexec_with_malloc_env

if __name__ == "__main__":
    reexec_with_malloc_env()
    sys.exit(main())
