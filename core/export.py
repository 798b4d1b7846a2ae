"""Export a run to transformers: ``python -m core.export`` (core/sharing/export.py)."""

import sys

from core.sharing.export import main

if __name__ == "__main__":
    sys.exit(main())
