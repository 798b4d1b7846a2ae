"""Training: the trainer and its CLI, data and tokenizers, the memory plan, diagnostics probes
and the compile guard. Imports torch; orchestration reaches it only through `python -m core.train`.
"""
