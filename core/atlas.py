"""Routing atlas of a run over a corpus: ``python -m core.atlas`` (core/analysis/atlas/cli.py)."""

import sys

from core.analysis.atlas.cli import main

if __name__ == "__main__":
    sys.exit(main())
