"""HTML reports: ``python -m core.report`` (core/analysis/report.py)."""

import sys

from core.analysis.report import main

if __name__ == "__main__":
    sys.exit(main())
