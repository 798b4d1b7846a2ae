"""HTML reports: ``python -m core.report EXPERIMENT`` (core/analysis/report.py) or
``--study NAME|PATH`` (core/studies/report.py, whose main dispatches both)."""

import sys

from core.studies.report import main

if __name__ == "__main__":
    sys.exit(main())
