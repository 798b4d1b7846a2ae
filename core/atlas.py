"""Routing atlas of a run over a corpus: ``python -m core.atlas`` (core/analysis/atlas.py)."""

import sys

from core.analysis.atlas import main

if __name__ == "__main__":
    sys.exit(main())
