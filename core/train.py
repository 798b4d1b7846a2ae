"""Train one run: ``python -m core.train`` (the trainer lives in core/training/trainer.py)."""

import sys

from core.training.trainer import main, reexec_with_malloc_env

if __name__ == "__main__":
    reexec_with_malloc_env()
    sys.exit(main())
