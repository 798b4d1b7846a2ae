"""Run a grid or a study: ``python -m core.sweep`` (core/jobs/sweep.py)."""

import sys

from core.jobs.sweep import main

if __name__ == "__main__":
    sys.exit(main())
