"""Run a grid or a study: ``python -m core.sweep`` (core/studies/sweep.py, grids in core/jobs/sweep.py)."""

import sys

from core.studies.sweep import main

if __name__ == "__main__":
    sys.exit(main())
