"""Experiments and models on the Hugging Face Hub: ``python -m core.hub`` (core/sharing/hub.py)."""

import sys

from core.sharing.hub import main

if __name__ == "__main__":
    sys.exit(main())
